"""One-command GPU check (issue 15): conformance on CUDA, CUDA vs CPU, GPU table.

    PYTHONPATH=$PWD python -m bench.gpu_check [--out DIR] [--suite-timeout 300]
        [--skip-suite] [--iters 20]

On one CUDA device, within about 8 minutes:

1. runs the conformance suite on the reference with ``--device=cuda`` (CI
   profile) in a subprocess, with a time limit, and keeps its summary;
2. runs each component of the reference on the same inputs on the CPU and on
   the GPU and compares the results: exactly for indices and assignments (kept
   boxes, gt_inds, matches), within float tolerance for values;
3. times the GPU workloads (CUDA events, median of ``--iters``) and divides each
   by its HBM floor: the bytes the workload must move at the least (read its
   inputs once, write its outputs once), over the device's peak bandwidth (a
   table of known parts; otherwise the measured device-to-device copy rate).

Writes DIR/gpu_check.md and DIR/gpu_check.json (default bench/results). Without
a CUDA device it prints one line saying so and exits 0 without writing
anything. Works with torch >= 2.11 / torchvision >= 0.26 (no newer APIs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

# Peak HBM bandwidth in bytes/s of known parts, matched on the device name.
PEAK_BANDWIDTH = [
    ("H200", 4.8e12),
    ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),  # SXM5 80GB HBM3
    ("GH200", 4.0e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),  # 40GB
    ("L40S", 0.864e12),
    ("L4", 0.3e12),
    ("V100", 0.9e12),
]


# --------------------------------------------------------------------------- helpers
def _reference():
    import reference  # noqa: F401

    return {name: sys.modules[f"reference.{name}"]
            for name in ("boxes", "anchors", "coders", "assignment", "losses", "nms",
                         "proposals", "roi")}


def _to(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_to(v, device) for v in x)
    return x


def _flatten(result):
    """The tensors of a result (tensor, tuple, NamedTuple or dataclass), in order."""
    if isinstance(result, torch.Tensor):
        return [result]
    if hasattr(result, "__dataclass_fields__"):
        return [t for k in result.__dataclass_fields__ for t in _flatten(getattr(result, k))]
    if isinstance(result, (list, tuple)):
        return [t for v in result for t in _flatten(v)]
    return []


def compare(name, fn, inputs, exact=False, atol=1e-4, rtol=1e-4):
    """Run fn on CPU and CUDA copies of the inputs; one row of the comparison table."""
    try:
        cpu = _flatten(fn(*_to(inputs, "cpu")))
        gpu = [t.cpu() for t in _flatten(fn(*_to(inputs, _GPU[0])))]
    except Exception as exc:  # report, do not stop the whole check
        return {"component": name, "status": "error", "detail": f"{type(exc).__name__}: {exc}"}
    if len(cpu) != len(gpu):
        return {"component": name, "status": "differs", "detail": "different number of outputs"}
    worst = 0.0
    for a, b in zip(cpu, gpu):
        if a.shape != b.shape or a.dtype != b.dtype:
            return {"component": name, "status": "differs",
                    "detail": f"shape/dtype {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"}
        if exact or not a.is_floating_point():
            if not torch.equal(a, b):
                return {"component": name, "status": "differs",
                        "detail": f"{int((a != b).sum())} of {a.numel()} entries differ"}
            continue
        if not torch.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True):
            diff = float((a.double() - b.double()).abs().nan_to_num(0).max())
            return {"component": name, "status": "differs", "detail": f"max abs diff {diff:.3g}"}
        if a.numel():
            worst = max(worst, float((a.double() - b.double()).abs().nan_to_num(0).max()))
    return {"component": name, "status": "ok",
            "detail": "identical" if worst == 0 else f"max abs diff {worst:.2g}"}


def cuda_time(fn, iters):
    """(median, min, max) seconds of fn() on the current CUDA device (after two warm-ups)."""
    fn()
    fn()
    if _GPU[0] == "cpu":  # --cpu-dry-run: the same code path, timed by the clock
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        times.sort()
        return times[len(times) // 2], times[0], times[-1]
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2], times[0], times[-1]


def peak_bandwidth(name: str) -> tuple[float, str]:
    for key, value in PEAK_BANDWIDTH:
        if key in name:
            return value, f"{value / 1e12:.2f} TB/s (datasheet, {key})"
    x = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    seconds, _, _ = cuda_time(lambda: y.copy_(x), 10)
    measured = 2 * x.numel() / seconds
    return measured, f"{measured / 1e12:.2f} TB/s (measured device copy)"


# --------------------------------------------------------------------------- inputs
def _inputs():
    from bench import workloads as W

    anchors = W.retinanet_anchors("cpu")  # (182403, 4)
    g = torch.Generator().manual_seed(0)
    return {
        "anchors": anchors,
        "gts100": W.random_gts(100, "cpu"),
        "gts500": W.random_gts(500, "cpu"),
        "labels100": torch.arange(100) % 80,
        "deltas": torch.randn(anchors.shape, generator=g),
        "points": W.rtmdet_points("cpu"),
        "logits8400": torch.randn(8400, 80, generator=g),
        "logits_fl": torch.randn(182403, 80, generator=g),
        "nms": W.random_boxes_scores(5000, "cpu"),
        "nms30k": W.random_boxes_scores(30000, "cpu"),
    }


def comparisons(R, I):
    B, A, C, L, N, P, RO = (R[k] for k in ("boxes", "assignment", "coders", "losses", "nms",
                                           "proposals", "roi"))
    anchors, gts, labels = I["anchors"], I["gts100"], I["labels100"]
    fl_labels = torch.full((182403,), 80, dtype=torch.long)
    fl_labels[::97] = torch.arange(len(fl_labels[::97])) % 80
    boxes5k, scores5k = I["nms"]
    idxs5k = torch.arange(5000) % 80
    points = I["points"]
    ctr = points[:, :2]
    gts_dsl = gts * 0.5
    gen_rows = [
        ("box_iou (mmdet) 100 x 182403", lambda a, b: B.box_iou(a, b), (gts, anchors), False),
        ("pairwise_iou (detectron2)", lambda a, b: B.pairwise_iou(a, b), (gts, anchors), False),
        ("box_iou_torchvision", lambda a, b: B.box_iou_torchvision(a, b), (gts, anchors), False),
        ("aligned GIoU", lambda a: B.box_iou(a, a + 3.0, mode="giou", is_aligned=True),
         (anchors,), False),
        ("AnchorGenerator RetinaNet", lambda: R["anchors"].AnchorGenerator(
            strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0], octave_base_scale=4,
            scales_per_octave=3).grid_anchors([(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)],
                                              device=_DEVICE[0]),
         (), False),
        ("DeltaXYWHBBoxCoder encode", lambda a: C.DeltaXYWHBBoxCoder().encode(a, a * 1.05 + 2),
         (anchors,), False),
        ("DeltaXYWHBBoxCoder decode", lambda a, d: C.DeltaXYWHBBoxCoder().decode(
            a, d, max_shape=(800, 1216)), (anchors, I["deltas"]), False),
        ("MaxIoUAssigner 100 x 182403", lambda a, b, l: A.MaxIoUAssigner(0.5, 0.4).assign(
            a, b, gt_labels=l), (anchors, gts, labels), True),
        ("MaxIoUAssigner 500 x 182403", lambda a, b: A.MaxIoUAssigner(0.5, 0.4).assign(a, b),
         (anchors, I["gts500"]), True),
        ("detectron2 Matcher", lambda a, b: A.Matcher([0.4, 0.5], [0, -1, 1], True)(
            B.pairwise_iou(b, a)), (anchors, gts), True),
        ("torchvision Matcher", lambda a, b: A.TorchvisionMatcher(0.5, 0.4, True)(
            B.box_iou_torchvision(b, a)), (anchors, gts), True),
        ("DynamicSoftLabelAssigner 100 x 8400", lambda s, d, p, b, l: A.DynamicSoftLabelAssigner(
         ).assign(s, d, p, b, l), (I["logits8400"], torch.cat([ctr - 20, ctr + 20], 1), points,
                                   gts_dsl, labels), True),
        ("sigmoid_focal_loss 182403 x 80", lambda x, y: L.sigmoid_focal_loss(
            x, y, reduction="sum"), (I["logits_fl"], fl_labels), False),
        ("giou_loss 182403", lambda a: L.giou_loss(a, a + 2.0, reduction="sum"), (anchors,), False),
        ("nms 5000", lambda b, s: N.nms(b, s, 0.5), (boxes5k, scores5k), True),
        ("batched_nms 5000 x 80 classes", lambda b, s, i: N.batched_nms(b, s, i, 0.5),
         (boxes5k, scores5k, idxs5k), True),
        ("multiclass_nms", lambda b, s: N.multiclass_nms(b, s, 0.05, 0.5, 100),
         (boxes5k[:1000], torch.softmax(I["logits8400"][:1000, :11], 1)), False),
        ("fast_rcnn_inference", lambda b, s: N.fast_rcnn_inference(b, s, (1100, 1100)),
         (boxes5k[:1000], torch.softmax(I["logits8400"][:1000, :11], 1)), False),
        ("find_top_rpn_proposals", lambda b, s: P.find_top_rpn_proposals(
            [b[:3000], b[3000:]], [s[:3000], s[3000:]], (1100, 1100)), (boxes5k, scores5k), False),
        ("MultiLevelRoIPooler mmdet", lambda f0, f1, r: RO.MultiLevelRoIPooler(
            7, scales=[1 / 4, 1 / 8], sampling_ratio=0, aligned=True, mapping="mmdet")([f0, f1], r),
         (torch.randn(2, 16, 100, 152), torch.randn(2, 16, 50, 76),
          torch.cat([(torch.arange(64) % 2)[:, None].float(), gts[:64] * 0.5], 1)), False),
    ]
    return gen_rows


_DEVICE = ["cpu"]  # the device the generator rows build on (set by run_comparisons)
_GPU = ["cuda"]  # "cpu" with --cpu-dry-run, which tests this script without a GPU


def run_comparisons(R, I):
    rows = []
    for name, fn, inputs, exact in comparisons(R, I):
        if not inputs:  # generators take the device as an argument
            _DEVICE[0] = "cpu"
            cpu = _flatten(fn())
            _DEVICE[0] = _GPU[0]
            gpu = [t.cpu() for t in _flatten(fn())]
            same = all(torch.equal(a, b) for a, b in zip(cpu, gpu)) and len(cpu) == len(gpu)
            rows.append({"component": name, "status": "ok" if same else "differs",
                         "detail": "identical" if same else "values differ"})
            continue
        rows.append(compare(name, fn, inputs, exact=exact))
        print(f"  {name}: {rows[-1]['status']} ({rows[-1]['detail']})", flush=True)
    return rows


def benchmarks(R, I, iters, bandwidth):
    B, A, L, N = R["boxes"], R["assignment"], R["losses"], R["nms"]
    dev = _GPU[0]
    anchors = I["anchors"].to(dev)
    n = anchors.shape[0]
    rows = []

    def add(name, fn, bytes_moved, peer=None):
        median, low, high = cuda_time(fn, iters)
        floor = bytes_moved / bandwidth
        row = {"workload": name, "median_ms": median * 1e3, "min_ms": low * 1e3,
               "max_ms": high * 1e3, "floor_ms": floor * 1e3, "ratio_to_floor": median / floor}
        if peer is not None:
            row["torchvision_ms"] = cuda_time(peer, iters)[0] * 1e3
        rows.append(row)
        print(f"  {name}: {median * 1e3:.3f} ms, {median / floor:.1f}x its floor", flush=True)

    for g in (100, 500):
        gts = I[f"gts{g}"].to(dev)
        add(f"pairwise IoU {g} x {n}", lambda gts=gts: B.box_iou(gts, anchors),
            4 * g * n + 16 * (g + n), peer=lambda gts=gts: torchvision.ops.box_iou(gts, anchors))
        # Least traffic for assignment: read boxes, write gt_inds (8 B), max_overlaps
        # (4 B), labels (8 B) per prior; the (G, N) matrix need not exist.
        labels = (torch.arange(g) % 80).to(dev)
        assigner = A.MaxIoUAssigner(0.5, 0.4)
        add(f"MaxIoU assign {g} x {n}", lambda gts=gts, labels=labels: assigner.assign(
            anchors, gts, gt_labels=labels), 16 * (g + n) + 20 * n)
        matcher = A.Matcher([0.4, 0.5], [0, -1, 1], True)
        add(f"detectron2 Matcher {g} x {n} (with IoU)", lambda gts=gts: matcher(
            B.pairwise_iou(gts, anchors)), 16 * (g + n) + 9 * n)
    logits = I["logits_fl"].to(dev)
    fl_labels = torch.full((n,), 80, dtype=torch.long, device=dev)
    fl_labels[::97] = (torch.arange(len(fl_labels[::97]), device=dev) % 80)
    add("focal loss 182403 x 80", lambda: L.sigmoid_focal_loss(logits, fl_labels, reduction="sum"),
        4 * logits.numel() + 8 * n,
        peer=lambda: torchvision.ops.sigmoid_focal_loss(
            logits, torch.nn.functional.one_hot(fl_labels, 81)[:, :80].float(), reduction="sum"))
    for key in ("nms", "nms30k"):  # 5000 and 30000 boxes
        boxes, scores = (t.to(dev) for t in I[key])
        count = boxes.shape[0]
        idxs = (torch.arange(count) % 80).to(dev)
        add(f"batched NMS {count} x 80 classes", lambda b=boxes, s=scores, i=idxs: N.batched_nms(
            b, s, i, 0.5), 28 * count, peer=lambda b=boxes, s=scores, i=idxs:
            torchvision.ops.batched_nms(b, s, i, 0.5))
    return rows


def run_suite(timeout: int) -> dict:
    env = dict(os.environ, CONFORMANCE_PROFILE="ci", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "pytest", "conformance", "--impl=reference", "--device=cuda",
           "-q", "-p", "no:cacheprovider", "-x"]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        status = "passed" if done.returncode == 0 else f"exit {done.returncode}"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        tail = out.strip().splitlines()[-15:]
        status = f"timed out after {timeout} s"
    return {"status": status, "seconds": time.perf_counter() - start, "tail": tail}


def markdown(report) -> str:
    lines = [
        "# GPU check",
        "",
        f"Device: {report['device']}; torch {report['torch']}, torchvision {report['torchvision']}; "
        f"peak bandwidth {report['bandwidth']}. Written {report['written']} UTC by "
        "`python -m bench.gpu_check`.",
        "",
        f"## Conformance suite, --device=cuda: {report['suite']['status']} "
        f"({report['suite']['seconds']:.0f} s)",
        "",
        "```",
        *report["suite"]["tail"],
        "```",
        "",
        "## CUDA result vs CPU result",
        "",
        "| component | status | detail |",
        "|---|---|---|",
        *(f"| {r['component']} | {r['status']} | {r['detail']} |" for r in report["comparisons"]),
        "",
        "## GPU benchmarks (median of CUDA-event timings; floor = least bytes / peak bandwidth)",
        "",
        "| workload | median ms | min ms | max ms | HBM floor ms | ratio to floor | torchvision ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["benchmarks"]:
        tv = f"{r['torchvision_ms']:.3f}" if "torchvision_ms" in r else "-"
        lines.append(f"| {r['workload']} | {r['median_ms']:.3f} | {r['min_ms']:.3f} | "
                     f"{r['max_ms']:.3f} | {r['floor_ms']:.4f} | {r['ratio_to_floor']:.1f}x | {tv} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--suite-timeout", type=int, default=300)
    parser.add_argument("--skip-suite", action="store_true")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run every step with 'cpu' in place of 'cuda' (tests the script)")
    args = parser.parse_args(argv)
    if args.cpu_dry_run:
        _GPU[0] = "cpu"
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device is available: GPU check skipped, nothing written")
        return 0
    import datetime

    if args.cpu_dry_run:
        name, bandwidth, bandwidth_text = "cpu (dry run)", 20e9, "20 GB/s (assumed, dry run)"
    else:
        name = torch.cuda.get_device_name(0)
        bandwidth, bandwidth_text = peak_bandwidth(name)
    report = {"device": name, "torch": torch.__version__, "torchvision": torchvision.__version__,
              "bandwidth": bandwidth_text,
              "written": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"}
    print(f"gpu_check on {name}, {bandwidth_text}", flush=True)
    R, I = _reference(), _inputs()
    print("CUDA vs CPU:", flush=True)
    report["comparisons"] = run_comparisons(R, I)
    print("benchmarks:", flush=True)
    report["benchmarks"] = benchmarks(R, I, args.iters, bandwidth)
    if args.skip_suite:
        report["suite"] = {"status": "skipped (--skip-suite)", "seconds": 0.0, "tail": []}
    else:
        print("conformance suite --device=cuda ...", flush=True)
        report["suite"] = run_suite(args.suite_timeout)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    bad = [r for r in report["comparisons"] if r["status"] != "ok"]
    return 1 if bad or not report["suite"]["status"].startswith(("passed", "skipped")) else 0


if __name__ == "__main__":
    sys.exit(main())
