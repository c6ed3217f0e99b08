"""COCO bbox evaluation with pycocotools, after each epoch and from the command line.

    python -m reference.evaluate --checkpoint runs/retinanet/checkpoint.pth
    python -m reference.evaluate --checkpoint ckpt.pth --val-ann a.json --val-images imgs/ \
        --out detections.json

The command prints a header (checkpoint, model, annotation file, image and box
counts, device), the pycocotools summary and a per-category AP table; ``--out``
writes the detections (COCO results), ``--json-out`` the stats and the table.

``coco_evaluate(coco_gt, detections)`` is the one function the rest builds on: it
runs pycocotools' ``COCOeval`` and returns the 12 standard numbers by name
(``STAT_NAMES``: AP@[.5:.95], AP50, AP75, AP small/medium/large, AR@1/10/100, AR
small/medium/large). ``-1`` means "no ground truth in that area range", as in
pycocotools. Detections are COCO result dicts; ``predict_coco_results`` makes them
from a detector and a data loader, mapping boxes back to the original image size
and labels back to COCO category ids.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Iterable

import torch

__all__ = [
    "STAT_NAMES",
    "coco_evaluate",
    "coco_evaluate_per_class",
    "format_summary",
    "format_per_class",
    "predict_coco_results",
    "evaluate_model",
]

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

# The 12 lines COCOeval.summarize() prints, as (metric, IoU range, area, maxDets).
_SUMMARY_ROWS = (
    ("Average Precision", "0.50:0.95", "all", 100),
    ("Average Precision", "0.50", "all", 100),
    ("Average Precision", "0.75", "all", 100),
    ("Average Precision", "0.50:0.95", "small", 100),
    ("Average Precision", "0.50:0.95", "medium", 100),
    ("Average Precision", "0.50:0.95", "large", 100),
    ("Average Recall", "0.50:0.95", "all", 1),
    ("Average Recall", "0.50:0.95", "all", 10),
    ("Average Recall", "0.50:0.95", "all", 100),
    ("Average Recall", "0.50:0.95", "small", 100),
    ("Average Recall", "0.50:0.95", "medium", 100),
    ("Average Recall", "0.50:0.95", "large", 100),
)


def format_summary(stats: dict[str, float]) -> str:
    """The standard 12-line COCO summary for ``stats`` (as ``coco_evaluate`` returns)."""
    lines = []
    for name, (title, iou, area, dets) in zip(STAT_NAMES, _SUMMARY_ROWS):
        kind = "(AP)" if title.startswith("Average Precision") else "(AR)"
        lines.append(f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6} | "
                     f"maxDets={dets:>3} ] = {stats[name]:0.3f}")
    return "\n".join(lines)


def _as_coco(coco_gt):
    if isinstance(coco_gt, (str, Path)):
        from reference.data import load_coco
        return load_coco(coco_gt)
    return coco_gt


def coco_evaluate(coco_gt, detections: Iterable[dict], *,
                  verbose: bool = False) -> dict[str, float]:
    """The 12 COCO bbox statistics of ``detections`` against ``coco_gt``.

    coco_gt: a pycocotools ``COCO`` (or a path to an instances JSON).
    detections: COCO result dicts ``{"image_id": int, "category_id": int,
        "bbox": [x, y, w, h] (floats, pixels of the original image), "score": float}``.
        An empty list is valid (every AP is 0, or -1 where there is no ground truth).
    verbose: print the standard 12-line summary.

    Returns ``{name: value}`` for ``STAT_NAMES`` in order, as Python floats.
    """
    stats, _ = coco_evaluate_per_class(coco_gt, detections)
    if verbose:
        print(format_summary(stats), flush=True)
    return stats


def coco_evaluate_per_class(coco_gt, detections: Iterable[dict]) -> tuple[dict, list[dict]]:
    """``(the 12 stats of coco_evaluate, one row per category)``.

    A row is ``{"category_id", "name", "gts" (non-crowd annotations), "AP" (IoU
    .50:.95), "AP50", "AP75"}``, area "all", 100 detections per image: the mean of
    pycocotools' precision array over the IoU thresholds and 101 recall points of
    that category where it is defined (``> -1``), as detectron2's COCOEvaluator
    derives its per-category AP. A category without ground truth gets ``nan``.
    """
    evaluator = _cocoeval(_as_coco(coco_gt), detections)
    stats = {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}
    precision = evaluator.eval["precision"]  # (T IoUs, R recalls, K cats, A areas, M maxDets)
    params = evaluator.params
    area, dets = params.areaRngLbl.index("all"), list(params.maxDets).index(100)
    rows = []
    for k, cat_id in enumerate(params.catIds):
        values = {}
        for key, iou in (("AP", None), ("AP50", 0.5), ("AP75", 0.75)):
            block = precision[:, :, k, area, dets]  # (T, R)
            if iou is not None:
                block = block[[int(round((iou - 0.5) / 0.05))]]
            block = block[block > -1]
            values[key] = float(block.mean()) if block.size else float("nan")
        gts = len(evaluator.cocoGt.getAnnIds(catIds=[cat_id], iscrowd=False))
        name = evaluator.cocoGt.cats[cat_id].get("name", str(cat_id))
        rows.append({"category_id": int(cat_id), "name": name, "gts": gts, **values})
    return stats, rows


def format_per_class(rows: list[dict]) -> str:
    """The per-category table of ``coco_evaluate_per_class``, one line a category."""
    width = max([len("category")] + [len(r["name"]) for r in rows])
    lines = [f"{'category':<{width}}  {'id':>4}  {'gts':>5}  {'AP':>6}  {'AP50':>6}  {'AP75':>6}"]
    for r in rows:
        cells = "  ".join(f"{r[key]:6.3f}" if r[key] == r[key] else f"{'-':>6}"
                          for key in ("AP", "AP50", "AP75"))
        lines.append(f"{r['name']:<{width}}  {r['category_id']:>4}  {r['gts']:>5}  {cells}")
    return "\n".join(lines)


def _cocoeval(coco_gt, detections: Iterable[dict]):
    """pycocotools' COCOeval of ``detections``, evaluated, accumulated and summarised."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    detections = list(detections)
    known_images = set(coco_gt.getImgIds())
    for det in detections:
        missing = {"image_id", "category_id", "bbox", "score"} - set(det)
        if missing:
            raise ValueError(f"detection {det!r} lacks {sorted(missing)}")
        if det["image_id"] not in known_images:
            raise ValueError(f"detection for image_id={det['image_id']!r}, which is not in "
                             "the ground-truth file")
    # Build the results COCO by hand: COCO.loadRes rejects an empty list and prints.
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": list(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    for k, det in enumerate(detections):
        x, y, w, h = (float(v) for v in det["bbox"])
        coco_dt.dataset["annotations"].append({
            "id": k + 1, "image_id": det["image_id"], "category_id": det["category_id"],
            "bbox": [x, y, w, h], "area": w * h, "score": float(det["score"]), "iscrowd": 0,
        })
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@torch.no_grad()
def predict_coco_results(model: torch.nn.Module, loader, label_to_cat_id: list[int],
                         device: torch.device) -> list[dict]:
    """Run ``model`` (eval mode) over ``loader`` and return COCO result dicts.

    The loader yields ``(images, targets)`` lists as ``reference.data`` makes them;
    boxes come back in the resized image's pixels and are scaled by
    ``orig_size / size`` per axis to the original image, then written as xywh.
    """
    was_training = model.training
    model.eval()
    results: list[dict] = []
    for images, targets in loader:
        outputs = model([image.to(device) for image in images])
        for output, target in zip(outputs, targets):
            boxes = output["boxes"].detach().float().cpu()  # (K, 4) xyxy, resized pixels
            scale_y, scale_x = (target["orig_size"].float() / target["size"].float()).tolist()
            boxes = boxes * torch.tensor([scale_x, scale_y, scale_x, scale_y])
            xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)  # (K, 4)
            for box, score, label in zip(xywh.tolist(), output["scores"].tolist(),
                                         output["labels"].tolist()):
                results.append({"image_id": int(target["image_id"]),
                                "category_id": int(label_to_cat_id[int(label)]),
                                "bbox": [round(v, 3) for v in box], "score": float(score)})
    model.train(was_training)
    return results


def evaluate_model(model: torch.nn.Module, loader, coco_gt, label_to_cat_id: list[int],
                   device: torch.device, *, verbose: bool = True) -> dict[str, float]:
    """``predict_coco_results`` then ``coco_evaluate``; returns the 12 stats."""
    detections = predict_coco_results(model, loader, label_to_cat_id, device)
    return coco_evaluate(coco_gt, detections, verbose=verbose)


# --------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference.evaluate",
        description="COCO bbox evaluation of a checkpoint written by reference.train. "
        "Without data flags it evaluates on the validation split the checkpoint was "
        "trained with.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pth from training")
    parser.add_argument("--model", default=None, metavar="MODULE:FUNCTION",
                        help="only for a checkpoint of your own module:function builder: "
                        "name it here to allow importing it (a name read from the file is "
                        "never imported)")
    parser.add_argument("--data-path", default=None,
                        help="COCO root (annotations/instances_val2017.json, val2017/)")
    parser.add_argument("--val-ann", default=None, help="COCO instances JSON to evaluate on")
    parser.add_argument("--val-images", default=None, help="folder of the images it names")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=0, help="data loading processes")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N (default: cuda if available, as train)")
    parser.add_argument("--out", default=None, metavar="DETECTIONS.json",
                        help="also write the detections as COCO results (image_id, "
                        "category_id, bbox [x,y,w,h], score) here")
    parser.add_argument("--json-out", default=None, help="also write the 12 stats and the "
                        "per-category rows as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    from reference.data import (CocoDetection, DatasetError, build_transforms, collate_lists,
                                load_coco)
    from reference.checkpoint import CheckpointError, load_model_from_checkpoint

    args = build_parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model, checkpoint = load_model_from_checkpoint(args.checkpoint, device,
                                                       trusted_builder=args.model)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = checkpoint["data"]
    val_ann, val_images = data["val_ann"], data["val_images"]
    if args.data_path:
        root = Path(args.data_path)
        val_ann = str(root / "annotations" / "instances_val2017.json")
        val_images = str(root / "val2017")
    val_ann = args.val_ann or val_ann
    val_images = args.val_images or val_images
    try:
        coco_gt = load_coco(val_ann)
        dataset = CocoDetection(val_images, coco=coco_gt, transforms=build_transforms(
            False, data["min_size"], data["max_size"]))
        if dataset.label_to_cat_id != checkpoint["label_to_cat_id"]:
            print(f"warning: categories of {val_ann} {dataset.label_to_cat_id} differ from the "
                  f"checkpoint's {checkpoint['label_to_cat_id']}", file=sys.stderr)
        boxes = sum(len(r["labels"]) for r in dataset.records)
        print(f"checkpoint  {args.checkpoint} (model {checkpoint.get('model_name')}, epoch "
              f"{checkpoint.get('epoch', '?')}, step {checkpoint.get('step', '?')})\n"
              f"annotations {val_ann}\n"
              f"images      {val_images}: {len(dataset)} images, {boxes} boxes, "
              f"{len(dataset.label_to_cat_id)} categories\n"
              f"resized to  shorter side {data['min_size']}, longer at most "
              f"{data['max_size']}; device {device}", flush=True)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False,
                                             num_workers=args.workers, collate_fn=collate_lists)
        detections = predict_coco_results(model, loader, checkpoint["label_to_cat_id"], device)
        stats, rows = coco_evaluate_per_class(coco_gt, detections)
    except DatasetError as exc:
        lines = str(exc).strip().splitlines()  # a worker's error carries its traceback
        print(f"error: {lines[-1].split('DatasetError: ')[-1] if lines else exc}",
              file=sys.stderr)
        return 2
    print(f"{len(detections)} detections\n{format_summary(stats)}\n\nper category "
          f"(area all, 100 detections per image):\n{format_per_class(rows)}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(detections) + "\n")
        print(f"detections written to {args.out} (COCO results)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({**stats, "per_category": rows}, indent=2)
                                       + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
