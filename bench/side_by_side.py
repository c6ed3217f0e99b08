"""Side-by-side timings of IoU, MaxIoU assignment and batched NMS (issue 15).

    PYTHONPATH=$PWD /work/venv-up/bin/python -m bench.side_by_side [--rounds 7]
        [--threads 2] [--only iou,assign,nms] [--out bench/results/side_by_side.md]

All implementations of a workload run in ONE process, interleaved round by round
(round r times every implementation once, in a rotating order), so that a load
spike from other processes on a shared machine hits all of them alike; the table
gives min / median / max over the rounds and each peer's median divided by the
reference's (above 1: the reference is faster). Floor rows time writing the
(G, N) float32 output once (``torch.full``) and one elementwise pass over it.

Peers: torchvision (installed) and mmdetection 3.3 when importable (run with an
interpreter that has mmdet, e.g. /work/venv-up/bin/python; mmcv-lite has no
compiled ops, so ``mmcv.ops`` is replaced by an empty stand-in before the import:
the assigner and ``bbox_overlaps`` never call it). Before timing, each peer's
result is compared with the reference's (bit-identical where the contract is the
same: gt_inds and max_overlaps of the assigners, kept indices of NMS).

This script asserts nothing about time; it prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.abc
import importlib.machinery
import os
import platform
import sys
import time
import types

import torch
import torchvision

from bench import workloads as W


# --------------------------------------------------------------------------- peers
class _EmptyOps(types.ModuleType):
    """Any attribute is a do-nothing class: enough for mmdet's imports of mmcv.ops."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None})


class _EmptyOpsFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "mmcv.ops" or fullname.startswith("mmcv.ops."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _EmptyOps(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def load_mmdet():
    """(MaxIoUAssigner, bbox_overlaps, InstanceData, version) of mmdet, or None."""
    try:
        import mmdet  # noqa: F401
    except ImportError:
        return None
    if "mmcv.ops" not in sys.modules:
        try:
            import mmcv.ops  # noqa: F401
        except Exception:  # mmcv-lite: no compiled _ext
            for name in [n for n in sys.modules if n.startswith("mmcv.ops")]:
                del sys.modules[name]
            sys.meta_path.insert(0, _EmptyOpsFinder())
    from mmdet.models.task_modules.assigners import MaxIoUAssigner
    from mmdet.structures.bbox import bbox_overlaps
    from mmengine.structures import InstanceData

    return MaxIoUAssigner, bbox_overlaps, InstanceData, mmdet.__version__


# --------------------------------------------------------------------------- timing
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict, rounds: int, device) -> dict:
    """{name: [seconds per round]}: every fn once per round, rotating the order."""
    names = list(fns)
    for fn in fns.values():  # warm-up (allocator, caches, lazy imports)
        fn()
    _sync(device)
    times = {name: [] for name in names}
    for r in range(rounds):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            _sync(device)
            start = time.perf_counter()
            out = fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
            del out
    return times


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def _ms(s):
    return f"{s * 1e3:.1f}" if s >= 0.01 else f"{s * 1e3:.2f}"


# --------------------------------------------------------------------------- workloads
def iou_workloads(device, mmdet, sizes=(100, 500)):
    from reference import boxes as ref_boxes

    anchors = W.retinanet_anchors(device)
    for g in sizes:
        gts = W.random_gts(g, device)
        n = anchors.shape[0]
        fns = {
            "reference": lambda gts=gts: ref_boxes.box_iou(gts, anchors),
            "torchvision": lambda gts=gts: torchvision.ops.box_iou(gts, anchors),
            "floor: write (G, N) f32": lambda g=g: torch.full((g, n), 0.5, device=device),
        }
        out = torch.empty((g, n), device=device)
        src = torch.full((g, n), 0.5, device=device)
        fns["floor: one elementwise pass"] = lambda src=src, out=out: torch.mul(src, 2, out=out)
        if mmdet:
            fns["mmdet 3.3"] = lambda gts=gts: mmdet[1](gts, anchors)
        ref = fns["reference"]()
        assert torch.allclose(ref, torchvision.ops.box_iou(gts, anchors), atol=1e-6)
        if mmdet:
            assert torch.equal(ref, mmdet[1](gts, anchors)), "IoU differs from mmdet's"
        yield f"pairwise IoU {g} x {n}", fns


def assign_workloads(device, mmdet, sizes=(10, 100, 500)):
    from reference import assignment as A
    from reference import boxes as ref_boxes
    from torchvision.models.detection import _utils as tv_utils

    anchors = W.retinanet_anchors(device)
    n = anchors.shape[0]
    ours = A.MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
    d2 = A.Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)
    tv_ours = A.TorchvisionMatcher(0.5, 0.4, allow_low_quality_matches=True)
    tv_theirs = tv_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)
    for g in sizes:
        gts = W.random_gts(g, device)
        labels = torch.arange(g, device=device) % 80
        fns = {"reference": lambda gts=gts, labels=labels: ours.assign(anchors, gts,
                                                                       gt_labels=labels)}
        if mmdet:
            MaxIoU, _, InstanceData, _ = mmdet
            theirs = MaxIoU(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
            pred, gt = InstanceData(priors=anchors), InstanceData(bboxes=gts, labels=labels)
            fns["mmdet 3.3"] = lambda theirs=theirs, pred=pred, gt=gt: theirs.assign(pred, gt)
            a, b = fns["reference"](), fns["mmdet 3.3"]()
            assert torch.equal(a.gt_inds, b.gt_inds), "gt_inds differ from mmdet's"
            assert torch.equal(a.max_overlaps, b.max_overlaps), "max_overlaps differ"
            assert torch.equal(a.labels, b.labels), "labels differ from mmdet's"
        yield f"MaxIoU assign {g} x {n}", fns
        if g == 10:
            continue
        yield f"detectron2 Matcher {g} x {n}", {
            "reference": lambda gts=gts: d2(ref_boxes.pairwise_iou(gts, anchors)),
            **({"mmdet 3.3 MaxIoU": fns["mmdet 3.3"]} if mmdet else {}),
        }
        tv = {
            "reference": lambda gts=gts: tv_ours(ref_boxes.box_iou_torchvision(gts, anchors)),
            "torchvision": lambda gts=gts: tv_theirs(torchvision.ops.box_iou(gts, anchors)),
            **({"mmdet 3.3 MaxIoU": fns["mmdet 3.3"]} if mmdet else {}),
        }
        assert torch.equal(tv["reference"](), tv["torchvision"]()), "torchvision Matcher differs"
        yield f"torchvision Matcher {g} x {n}", tv


def nms_workloads(device, sizes=(1000, 5000, 30000)):
    import reference  # noqa: F401
    ref_nms = sys.modules["reference.nms"]  # the module; ``reference.nms`` is the function

    for num in sizes:
        boxes, scores = W.random_boxes_scores(num, device)
        idxs = (torch.arange(num) % 80).to(device)
        fns = {
            "reference": lambda b=boxes, s=scores, i=idxs: ref_nms.batched_nms(b, s, i, 0.5),
            "torchvision": lambda b=boxes, s=scores, i=idxs: torchvision.ops.batched_nms(
                b, s, i, 0.5),
            "reference, per-category loop": lambda b=boxes, s=scores, i=idxs: ref_nms.batched_nms(
                b, s, i, 0.5, method="loop"),
        }
        a = fns["reference"]()
        assert torch.equal(a, fns["reference, per-category loop"]()), "paths differ"
        # torchvision breaks score ties either way: compare the kept sets
        assert set(a.tolist()) == set(fns["torchvision"]().tolist()), "differs from torchvision"
        yield f"batched NMS {num} (80 classes)", fns


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="iou,assign,nms")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gts", default="100,500",
                        help="gt counts of the IoU and assignment workloads (assignment adds 10)")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mmdet = load_mmdet()
    groups = set(args.only.split(","))
    gts = tuple(int(g) for g in args.gts.split(","))

    lines = [
        f"Side by side on {platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, device {device}; torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, mmdet {mmdet[3] if mmdet else 'not installed'}; "
        f"{args.rounds} rounds interleaved; load average {os.getloadavg()[0]:.1f} at start; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
        "(`python -m bench.side_by_side`).",
        "",
        "| workload | implementation | min ms | median ms | max ms | median / reference |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    workloads = []
    if "iou" in groups:
        workloads.append(iou_workloads(device, mmdet, gts))
    if "assign" in groups:
        workloads.append(assign_workloads(device, mmdet, (10,) + gts))
    if "nms" in groups:
        workloads.append(nms_workloads(device))
    for gen in workloads:
        for name, fns in gen:
            times = interleaved(fns, args.rounds, device)
            ref = _median(times["reference"])
            for impl, ts in times.items():
                row = (f"| {name} | {impl} | {_ms(min(ts))} | {_ms(_median(ts))} | "
                       f"{_ms(max(ts))} | {_median(ts) / ref:.2f}x |")
                lines.append(row)
                print(row, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
