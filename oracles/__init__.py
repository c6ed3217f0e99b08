"""Loop-based float64 NumPy oracles, one module per stage, written from the seeds' step
lists; they import neither torch nor the implementation under test. Shared by the
conformance suite and the golden cases' cross-checks (neither imports the other for them).
"""
