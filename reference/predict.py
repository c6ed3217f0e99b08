"""Draw a trained detector's detections on images, and write them as COCO results.

    python -m reference.predict --checkpoint runs/train --out preds/   # the val images
    python -m reference.predict --checkpoint runs/train --image a.jpg --out a.png
    python -m reference.predict --checkpoint runs/train --image my/val/ --out preds/ \\
        --detections detections.json [--ann my/val.json] [--score-threshold 0.5]

Each image goes through the same resize and normalisation as validation; the boxes
are scaled back to the file's own size. The picture (``reference.visualize.draw_boxes``)
shows the detections scoring at least ``--score-threshold``, one colour per class,
labelled "class score" in a TrueType font; an image smaller than ``--min-side`` is
enlarged before drawing so the labels stay readable. ``--detections`` writes every
detection the model returns (not only the drawn ones) in the COCO results format
(``image_id``, ``category_id``, ``bbox`` as ``[x, y, w, h]`` pixels, ``score``), which
``reference.evaluate`` and pycocotools' ``loadRes`` read. The image ids come from
``--ann`` (a COCO instances JSON naming the files) when given, else 1..N in the
sorted order of the file names; each result also carries its ``file_name``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2

__all__ = ["IMAGE_SUFFIXES", "predict_image", "draw_detections", "coco_results", "list_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


@torch.no_grad()
def predict_image(model: torch.nn.Module, picture: Image.Image, min_size: int, max_size: int,
                  device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Detections for one PIL image, boxes (K, 4) xyxy in the image's own pixels."""
    from reference.data import build_transforms

    image = v2.functional.pil_to_tensor(picture.convert("RGB"))  # (3, H, W) uint8
    resized = build_transforms(False, min_size, max_size)(image)  # (3, h, w) float
    model.eval()
    output = model([resized.to(device)])[0]
    scale_y = image.shape[-2] / resized.shape[-2]
    scale_x = image.shape[-1] / resized.shape[-1]
    boxes = output["boxes"].float().cpu() * torch.tensor([scale_x, scale_y, scale_x, scale_y])
    return {"boxes": boxes, "scores": output["scores"].cpu(), "labels": output["labels"].cpu()}


def draw_detections(picture: Image.Image, detections: dict, class_names: list[str],
                    score_threshold: float = 0.5, min_side: int = 512,
                    title: str = "") -> Image.Image:
    """The image with the detections scoring >= ``score_threshold`` drawn on it
    (``reference.visualize.draw_boxes``: one colour per class, readable labels)."""
    from reference.visualize import draw_boxes

    keep = detections["scores"] >= score_threshold
    return draw_boxes(picture, detections["boxes"][keep], detections["labels"][keep],
                      class_names, detections["scores"][keep], min_side=min_side, title=title)


def coco_results(detections: dict, image_id: int, label_to_cat_id: list[int],
                 file_name: str | None = None) -> list[dict]:
    """COCO result dicts of one image's detections (bbox ``[x, y, w, h]``, 3 decimals)."""
    boxes = detections["boxes"].float()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)  # (K, 4)
    out = []
    for box, score, label in zip(xywh.tolist(), detections["scores"].tolist(),
                                 detections["labels"].tolist()):
        entry = {"image_id": int(image_id), "category_id": int(label_to_cat_id[int(label)]),
                 "bbox": [round(v, 3) for v in box], "score": round(float(score), 5)}
        if file_name is not None:
            entry["file_name"] = file_name
        out.append(entry)
    return out


def list_images(path: Path) -> list[Path]:
    """``[path]`` for a file; a folder's images (``IMAGE_SUFFIXES``), sorted by name."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _image_ids(images: list[Path], root: Path, ann: str | None) -> dict[Path, int]:
    if ann is None:
        return {p: k + 1 for k, p in enumerate(images)}
    from reference.data import load_coco

    coco = load_coco(ann)
    by_name = {}
    for info in coco.dataset.get("images", []):
        by_name[str(info["file_name"])] = int(info["id"])
        by_name.setdefault(Path(str(info["file_name"])).name, int(info["id"]))
    ids, missing = {}, []
    for p in images:
        key = str(p.relative_to(root)) if p != root else p.name
        found = by_name.get(key, by_name.get(p.name))
        if found is None:
            missing.append(p.name)
        ids[p] = found
    if missing:
        raise ValueError(f"--ann {ann!r} names no image {missing[0]!r}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return ids


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference.predict",
        description="Draw the detections of a checkpoint on an image or a folder of images, "
                    "and optionally write them as a COCO results JSON.")
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint .pth from training, or its run folder")
    parser.add_argument("--image", default=None, metavar="FILE|FOLDER",
                        help="an image (any format PIL reads) or a folder of images "
                        f"({', '.join(IMAGE_SUFFIXES)}); default: the checkpoint's "
                        "validation images (then --ann defaults to their annotation file)")
    parser.add_argument("--out", required=True, metavar="FILE|FOLDER",
                        help="output picture for one image (e.g. out.png); for a folder of "
                        "images, a folder (created) that gets NAME.png per image")
    parser.add_argument("--detections", default=None, metavar="JSON",
                        help="also write every detection (all scores, not only the drawn "
                        "ones) as COCO results: image_id, category_id, bbox [x,y,w,h], score")
    parser.add_argument("--ann", default=None, metavar="COCO_JSON",
                        help="take the image ids for --detections from this instances JSON "
                        "(matched by file_name); default 1..N in sorted file-name order")
    parser.add_argument("--score-threshold", type=float, default=0.5,
                        help="draw detections scoring at least this (default 0.5)")
    parser.add_argument("--min-side", type=int, default=512,
                        help="enlarge pictures whose shorter side is under this before "
                        "drawing, so labels stay readable (default 512; 0 keeps the size)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N (default: cuda if available, as train)")
    parser.add_argument("--model", default=None, metavar="MODULE:FUNCTION",
                        help="only for a checkpoint of your own module:function builder: "
                        "name it here to allow importing it (a name read from the file is "
                        "never imported)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from reference.checkpoint import CheckpointError, load_model_from_checkpoint
    from reference.data import DatasetError, load_rgb

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.min_side < 0:
        parser.error(f"--min-side {args.min_side}: expected >= 0")
    if args.image is not None and not Path(args.image).exists():
        parser.error(f"--image {args.image!r} does not exist")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model, checkpoint = load_model_from_checkpoint(args.checkpoint, device,
                                                       trusted_builder=args.model)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.image is None:  # the validation split the checkpoint was trained with
        args.image = checkpoint["data"]["val_images"]
        args.ann = args.ann or checkpoint["data"]["val_ann"]
        if not Path(args.image).is_dir():
            parser.error(f"the checkpoint's validation images {args.image!r} are not there; "
                         "pass --image")
    source, out = Path(args.image), Path(args.out)
    images = list_images(source)
    if not images:
        parser.error(f"--image {args.image!r}: a folder without images "
                     f"({', '.join(IMAGE_SUFFIXES)})")
    if source.is_dir():
        if out.suffix.lower() in IMAGE_SUFFIXES:
            parser.error(f"--out {args.out!r}: --image is a folder, so --out must be a folder "
                         "(it gets one NAME.png per image)")
        out.mkdir(parents=True, exist_ok=True)
    elif out.is_dir():
        parser.error(f"--out {args.out!r} is a folder; for one image give a file (e.g. out.png)")
    try:
        ids = _image_ids(images, source if source.is_dir() else source.parent, args.ann) \
            if args.detections else {}
    except (ValueError, DatasetError) as exc:
        parser.error(str(exc))
    data, names = checkpoint["data"], checkpoint["class_names"]
    results, drawn_total = [], 0
    for path in images:
        try:
            picture = load_rgb(path)
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        detections = predict_image(model, picture, data["min_size"], data["max_size"], device)
        shown = int((detections["scores"] >= args.score_threshold).sum())
        drawn_total += shown
        title = f"{path.name}: {shown} detections >= {args.score_threshold:g}"
        target = out / (path.stem + ".png") if source.is_dir() else out
        draw_detections(picture, detections, names, args.score_threshold, args.min_side,
                        title=title).save(target)
        if args.detections:
            results += coco_results(detections, ids[path], checkpoint["label_to_cat_id"],
                                    file_name=path.name)
        if source.is_dir():
            print(f"{path.name}: {shown} detections drawn into {target}")
    if args.detections:
        Path(args.detections).write_text(json.dumps(results) + "\n")
        print(f"{len(results)} detections of {len(images)} images written to {args.detections} "
              "(COCO results)")
    if source.is_dir():
        print(f"{drawn_total} detections drawn into {len(images)} pictures in {out}")
    else:
        print(f"{drawn_total} detections drawn into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
