"""Data: COCO-format datasets, the built-in synthetic shapes set, transforms, batching.

What a training step receives, and where it comes from:

1. A COCO-format annotation file (``instances_*.json``) is read with pycocotools.
   Category ids become contiguous labels ``0 .. C-1`` in ascending id order
   (``label_to_cat_id`` maps back for evaluation). Crowd annotations become
   *ignore regions* (``target["ignore_boxes"]``); boxes with zero or negative width
   or height after clipping to the image are dropped, and so are annotations naming
   an image or a category the file does not list; every drop is counted
   (``CocoDetection.dropped``) and logged. Annotations without ``iscrowd`` / ``area``
   get 0 / the box area (as detectron2 fills them), so pycocotools can evaluate them.
2. An image is read with PIL (``load_rgb``: 16-bit scaled to 8 bits, grayscale,
   RGBA, palette and CMYK to RGB); its size must match the annotation file's
   width/height. It is passed, with its boxes as ``tv_tensors.BoundingBoxes``,
   through ``torchvision.transforms.v2``: resize keeping the aspect ratio (shorter
   side to ``min_size``, longer side at most ``max_size``), a random horizontal flip
   in training, conversion to float and normalisation with the ImageNet mean/std.
3. Images of similar aspect ratio are grouped into batches
   (``GroupedBatchSampler``), and ``collate_lists`` yields ``(images, targets)`` as two
   lists; the detector pads the images into its own batch tensor.

One sample is ``(image, target)``::

    image   (3, H, W) float32, normalised, H x W the resized size
    target  boxes         (N, 4) float32 xyxy in pixels of the resized image
            labels        (N,)   int64 in [0, num_classes)
            ignore_boxes  (M, 4) float32 xyxy, crowd regions (never positives)
            image_id      int, the COCO image id
            orig_size     (2,) int64 (height, width) of the file on disk
            size          (2,) int64 (height, width) after the transforms

The built-in dataset (``ensure_synthetic_dataset``) needs no download: coloured
circles, squares, triangles and crosses of varied size on cluttered backgrounds,
written once, deterministically, as PNG + COCO JSON under ``default_cache_dir()``
(``$DETSPEC_CACHE`` or ``~/.cache/detspec``) in the usual COCO layout
(``annotations/instances_train2017.json``, ``train2017/``, ``val2017/``...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetError",
    "DataPaths",
    "SyntheticShapesConfig",
    "SHAPE_CLASSES",
    "default_cache_dir",
    "ensure_synthetic_dataset",
    "write_synthetic_split",
    "load_coco",
    "load_rgb",
    "CocoDetection",
    "build_transforms",
    "aspect_ratio_group_ids",
    "GroupedBatchSampler",
    "sample_seed",
    "SeededSamples",
    "EpochBatches",
    "collate_lists",
    "resolve_data_paths",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or not COCO format; the message names it."""


# --------------------------------------------------------------------------- paths
@dataclasses.dataclass(frozen=True)
class DataPaths:
    """Where the train and val splits live (annotation JSON + image folder each)."""

    train_ann: str
    train_images: str
    val_ann: str
    val_images: str
    synthetic: bool = False


def default_cache_dir() -> Path:
    """``$DETSPEC_CACHE`` if set, else ``~/.cache/detspec``."""
    env = os.environ.get("DETSPEC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "detspec"


def resolve_data_paths(
    data_path: str | None = None,
    train_ann: str | None = None,
    train_images: str | None = None,
    val_ann: str | None = None,
    val_images: str | None = None,
    synthetic: "SyntheticShapesConfig | None" = None,
) -> DataPaths:
    """The dataset a run uses.

    Explicit ``train_ann``/``train_images``/``val_ann``/``val_images`` win over
    ``data_path`` (a COCO root with ``annotations/instances_{train,val}2017.json``,
    ``train2017/`` and ``val2017/``); with neither, the built-in synthetic dataset
    is written (once) to the cache and used.
    """
    explicit = {"train_ann": train_ann, "train_images": train_images,
                "val_ann": val_ann, "val_images": val_images}
    if data_path is None and not any(explicit.values()):
        root = ensure_synthetic_dataset(synthetic or SyntheticShapesConfig())
        data_path = str(root)
        is_synthetic = True
    else:
        is_synthetic = False
    if data_path is not None:
        root = Path(data_path)
        defaults = {
            "train_ann": root / "annotations" / "instances_train2017.json",
            "train_images": root / "train2017",
            "val_ann": root / "annotations" / "instances_val2017.json",
            "val_images": root / "val2017",
        }
        for key, value in defaults.items():
            explicit[key] = explicit[key] or str(value)
    missing = [k for k, v in explicit.items() if not v]
    if missing:
        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise DatasetError(f"dataset incomplete: {flags} not given (or pass --data-path)")
    return DataPaths(**explicit, synthetic=is_synthetic)


# --------------------------------------------------------------------------- synthetic set
SHAPE_CLASSES = ("circle", "square", "triangle", "cross")


@dataclasses.dataclass(frozen=True)
class SyntheticShapesConfig:
    """The built-in dataset's parameters; the cache folder name hashes them.

    image_size: square images of this side (pixels).
    num_train / num_val: images per split.
    objects: (min, max) shapes per image.
    object_size: (min, max) side of a shape's box, pixels (not tiny: >= 16).
    max_overlap: shapes overlap by less than this fraction of the smaller one's box
        (later shapes are drawn on top, so this bounds how much is hidden).
    clutter: (min, max) distractor strokes/dots drawn in the background.
    seed: the split's images are a pure function of (seed, split, index).
    """

    image_size: int = 128
    num_train: int = 1200
    num_val: int = 200
    objects: tuple[int, int] = (1, 4)
    object_size: tuple[int, int] = (18, 56)
    max_overlap: float = 0.3
    clutter: tuple[int, int] = (2, 8)
    seed: int = 0

    def fingerprint(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True) + "|v2"
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def ensure_synthetic_dataset(config: SyntheticShapesConfig | None = None,
                             cache_dir: str | Path | None = None) -> Path:
    """Write the synthetic dataset once and return its COCO-layout root.

    Safe with several processes (torchrun): each writes into its own temporary
    folder and renames it into place; the first rename wins, later ones discard
    their copy. The content is identical either way.
    """
    config = config or SyntheticShapesConfig()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache / f"synthetic-shapes-{config.image_size}px-{config.fingerprint()}"
    if (root / "DONE").is_file():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=cache))
    try:
        (tmp / "annotations").mkdir()
        for split, count in (("train2017", config.num_train), ("val2017", config.num_val)):
            write_synthetic_split(tmp, split, count, config)
        (tmp / "DONE").write_text(json.dumps(dataclasses.asdict(config)) + "\n")
        try:
            os.replace(tmp, root)  # atomic when root does not exist yet
        except OSError:
            if not (root / "DONE").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("synthetic dataset ready at %s", root)
    return root


def write_synthetic_split(root: Path, split: str, count: int,
                          config: SyntheticShapesConfig) -> None:
    """Write ``root/split/*.png`` and ``root/annotations/instances_{split}.json``."""
    (root / split).mkdir(parents=True, exist_ok=True)
    split_salt = int(hashlib.sha256(split.encode()).hexdigest()[:8], 16)
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng([config.seed, split_salt, index])
        picture, shapes = _draw_synthetic_image(rng, config)
        file_name = f"{index:06d}.png"
        picture.save(root / split / file_name, format="PNG", optimize=False)
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name,
                       "width": config.image_size, "height": config.image_size})
        for label, (x1, y1, x2, y2) in shapes:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": label + 1,  # COCO ids are 1-based
                "bbox": [x1, y1, x2 - x1, y2 - y1],  # COCO xywh
                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"}
                  for i, name in enumerate(SHAPE_CLASSES)]
    coco = {"info": {"description": "detspec synthetic shapes", "split": split},
            "images": images, "annotations": annotations, "categories": categories}
    with open(root / "annotations" / f"instances_{split}.json", "w") as f:
        json.dump(coco, f)


def _covered_fraction(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over the smaller box's area (catches containment, unlike IoU)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller if smaller > 0 else 0.0


def _random_colour(rng: np.random.Generator, away_from: np.ndarray | None = None) -> tuple:
    """A saturated colour at least ~100 (L1 over RGB / 3 * 3) from ``away_from``."""
    for _ in range(50):
        colour = rng.integers(0, 256, size=3)
        if away_from is None or np.abs(colour - away_from).sum() > 240:
            break
    return tuple(int(c) for c in colour)


def _draw_synthetic_image(rng: np.random.Generator, config: SyntheticShapesConfig):
    """One image and its shapes as ``[(label, (x1, y1, x2, y2)), ...]`` (integer px)."""
    size = config.image_size
    # Background: a vertical gradient between two muted colours.
    top = rng.integers(40, 200, size=3).astype(np.float64)
    bottom = rng.integers(40, 200, size=3).astype(np.float64)
    t = np.linspace(0.0, 1.0, size)[:, None, None]  # (H, 1, 1)
    pixels = (top * (1 - t) + bottom * t) * np.ones((1, size, 1))  # (H, W, 3)
    pixels += rng.normal(0.0, 6.0, size=pixels.shape)  # sensor-like noise
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(picture)
    mean_bg = (top + bottom) / 2

    # Clutter: thin lines and small dots, too small or thin to be a shape.
    for _ in range(int(rng.integers(config.clutter[0], config.clutter[1] + 1))):
        colour = _random_colour(rng)
        if rng.random() < 0.5:
            x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, size=4))
            draw.line([x0, y0, x1, y1], fill=colour, width=1)
        else:
            x, y = (int(v) for v in rng.integers(0, size, size=2))
            r = int(rng.integers(1, 3))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)

    shapes: list[tuple[int, tuple[int, int, int, int]]] = []
    wanted = int(rng.integers(config.objects[0], config.objects[1] + 1))
    for _ in range(wanted * 10):  # rejection sampling on overlap
        if len(shapes) == wanted:
            break
        side = int(rng.integers(config.object_size[0], config.object_size[1] + 1))
        x1 = int(rng.integers(0, size - side + 1))
        y1 = int(rng.integers(0, size - side + 1))
        box = (x1, y1, x1 + side, y1 + side)
        if any(_covered_fraction(box, other) >= config.max_overlap for _, other in shapes):
            continue
        label = int(rng.integers(0, len(SHAPE_CLASSES)))
        box = _draw_shape(draw, SHAPE_CLASSES[label], box, _random_colour(rng, mean_bg), rng)
        shapes.append((label, box))
    return picture, shapes


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int],
                colour: tuple, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Draw one shape filling ``box`` (x1, y1, x2, y2; x2/y2 exclusive); return its box.

    PIL's filled primitives cover pixel centres up to and including x2 - 1, so the
    drawn pixels span exactly [x1, x2) x [y1, y2), which is the COCO box.
    """
    x1, y1, x2, y2 = box
    side = x2 - x1
    last_x, last_y = x2 - 1, y2 - 1
    if kind == "circle":
        draw.ellipse([x1, y1, last_x, last_y], fill=colour)
    elif kind == "square":
        draw.rectangle([x1, y1, last_x, last_y], fill=colour)
    elif kind == "triangle":
        if rng.random() < 0.5:  # apex up
            points = [(x1 + side / 2 - 0.5, y1), (x1, last_y), (last_x, last_y)]
        else:  # apex down
            points = [(x1, y1), (last_x, y1), (x1 + side / 2 - 0.5, last_y)]
        draw.polygon(points, fill=colour)
    elif kind == "cross":
        bar = max(3, side // 3)
        lo = x1 + (side - bar) // 2
        draw.rectangle([lo, y1, lo + bar - 1, last_y], fill=colour)
        lo = y1 + (side - bar) // 2
        draw.rectangle([x1, lo, last_x, lo + bar - 1], fill=colour)
    else:  # pragma: no cover - SHAPE_CLASSES is closed
        raise ValueError(f"unknown shape {kind!r}")
    return box


# --------------------------------------------------------------------------- COCO files
def load_coco(ann_file: str | Path):
    """A pycocotools ``COCO`` for ``ann_file``, with clear errors.

    Raises DatasetError when the file is missing, not JSON, or lacks the COCO
    ``images`` / ``annotations`` / ``categories`` lists or well-formed boxes.
    """
    from pycocotools.coco import COCO

    path = Path(ann_file)
    if not path.is_file():
        raise DatasetError(f"annotation file {str(path)!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            dataset = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"annotation file {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(dataset, dict):
        raise DatasetError(f"annotation file {str(path)!r}: expected a JSON object, "
                           f"got {type(dataset).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DatasetError(f"annotation file {str(path)!r}: missing the COCO list {key!r}")
    for ann in dataset["annotations"]:
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) for v in bbox)
                and "image_id" in ann and "category_id" in ann):
            raise DatasetError(f"annotation file {str(path)!r}: annotation {ann!r} needs "
                               "image_id, category_id and bbox [x, y, w, h]")
    # Defaults for the fields pycocotools' evaluation needs and many exporters omit
    # (detectron2's load_coco_json fills them the same way); ids must be unique.
    used_ids = {ann["id"] for ann in dataset["annotations"] if "id" in ann}
    next_id = max((i for i in used_ids if isinstance(i, int)), default=0) + 1
    for ann in dataset["annotations"]:
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        if "id" not in ann:
            ann["id"], next_id = next_id, next_id + 1
    for info in dataset["images"]:
        if not (isinstance(info, dict) and "id" in info and "file_name" in info):
            raise DatasetError(f"annotation file {str(path)!r}: image entry {info!r} needs "
                               "id and file_name")
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def load_rgb(path: str | Path) -> Image.Image:
    """The image file at ``path`` as 8-bit RGB.

    16-bit (and 32-bit integer) grayscale is scaled from [0, 65535] to [0, 255]
    (PIL's own ``convert("RGB")`` clips it, so most such images turn white); float
    images are clipped to [0, 255]; grayscale, grayscale + alpha, RGBA, palette,
    CMYK and bilevel images are converted by PIL (alpha dropped). Raises
    DatasetError naming the file when it cannot be read.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I"):  # I;16, I;16B, I;16L, I (32-bit)
                values = np.asarray(im, dtype=np.float64)  # (H, W)
                gray = np.clip(np.round(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
                return Image.fromarray(gray, "L").convert("RGB")
            if im.mode == "F":
                gray = np.clip(np.round(np.asarray(im, dtype=np.float64)), 0, 255)
                return Image.fromarray(gray.astype(np.uint8), "L").convert("RGB")
            if im.mode == "P" and "transparency" in im.info:
                return im.convert("RGBA").convert("RGB")
            return im.convert("RGB")
    except (FileNotFoundError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image {str(path)!r}: {exc}") from None


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection dataset (see the module docstring for a sample).

    images_dir: folder holding the ``file_name`` of every image entry.
    ann_file: COCO instances JSON (or pass an already loaded ``coco``).
    transforms: a v2 transform taking ``(image, target)``; None keeps the
        image as a uint8 ``tv_tensors.Image``.
    skip_empty: leave out images with no usable (non-crowd, non-degenerate) box,
        as training does; evaluation keeps every image.
    """

    def __init__(self, images_dir: str | Path, ann_file: str | Path | None = None, *,
                 coco=None, transforms=None, skip_empty: bool = False) -> None:
        if coco is None:
            if ann_file is None:
                raise ValueError("CocoDetection: pass ann_file or coco")
            coco = load_coco(ann_file)
        self.coco = coco
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise DatasetError(f"image folder {str(self.images_dir)!r} does not exist")
        self.transforms = transforms
        cat_ids = sorted(coco.getCatIds())
        self.label_to_cat_id = list(cat_ids)  # label k -> COCO category id
        self.cat_id_to_label = {cat_id: k for k, cat_id in enumerate(cat_ids)}
        self.class_names = [coco.cats[c].get("name", str(c)) for c in cat_ids]

        # Boxes are converted once here, so every epoch sees the same set and the
        # counts of dropped annotations are known up front.
        self.dropped = {"degenerate": 0, "unknown_category": 0, "unknown_image": 0}
        self.dropped["unknown_image"] = sum(
            1 for ann in coco.dataset.get("annotations", []) if ann["image_id"] not in coco.imgs)
        self.records: list[dict] = []
        for image_id in sorted(coco.imgs):
            info = coco.imgs[image_id]
            record = self._convert(info, coco.imgToAnns.get(image_id, []))
            if skip_empty and len(record["labels"]) == 0:
                continue
            self.records.append(record)
        name = ann_file or "dataset"
        if self.dropped["degenerate"]:
            log.warning("%s: dropped %d degenerate boxes (zero or negative width/height)",
                        name, self.dropped["degenerate"])
        if self.dropped["unknown_category"]:
            log.warning("%s: dropped %d annotations whose category_id is not in "
                        "'categories'", name, self.dropped["unknown_category"])
        if self.dropped["unknown_image"]:
            log.warning("%s: dropped %d annotations whose image_id is not in 'images'",
                        name, self.dropped["unknown_image"])

    @property
    def dropped_degenerate(self) -> int:
        return self.dropped["degenerate"]

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def num_classes(self) -> int:
        return len(self.label_to_cat_id)

    def _convert(self, info: dict, anns: list[dict]) -> dict:
        width, height = float(info.get("width", 0)), float(info.get("height", 0))
        boxes, labels, ignore = [], [], []
        for ann in anns:
            x, y, w, h = (float(v) for v in ann["bbox"])
            x1, y1, x2, y2 = x, y, x + w, y + h
            if width > 0 and height > 0:  # clip to the image when its size is known
                x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
                y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
            if not (x2 > x1 and y2 > y1 and all(map(math.isfinite, (x1, y1, x2, y2)))):
                self.dropped["degenerate"] += 1
                continue
            if ann.get("iscrowd", 0):
                ignore.append([x1, y1, x2, y2])
            elif ann["category_id"] in self.cat_id_to_label:
                boxes.append([x1, y1, x2, y2])
                labels.append(self.cat_id_to_label[ann["category_id"]])
            else:
                self.dropped["unknown_category"] += 1
        return {
            "image_id": int(info["id"]),
            "file_name": info["file_name"],
            "width": int(width), "height": int(height),
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),  # (N, 4)
            "labels": torch.tensor(labels, dtype=torch.int64),  # (N,)
            "ignore_boxes": torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4),  # (M, 4)
        }

    def __len__(self) -> int:
        return len(self.records)

    def aspect_ratios(self) -> list[float]:
        """width / height of every image, from the annotation file (no image reads)."""
        return [r["width"] / r["height"] if r["height"] else 1.0 for r in self.records]

    def __getitem__(self, index: int):
        record = self.records[index]
        path = self.images_dir / record["file_name"]
        picture = load_rgb(path)
        if record["width"] and record["height"] and \
                (picture.width, picture.height) != (record["width"], record["height"]):
            # the boxes were clipped to the annotation's size: they would be wrong
            raise DatasetError(f"image {str(path)!r} is {picture.width}x{picture.height} but "
                               f"the annotation file says {record['width']}x{record['height']}")
        canvas = (picture.height, picture.width)
        image = tv_tensors.Image(v2.functional.pil_to_tensor(picture))  # (3, H, W) uint8
        target = {
            "boxes": tv_tensors.BoundingBoxes(record["boxes"], format="XYXY", canvas_size=canvas),
            "labels": record["labels"].clone(),
            "ignore_boxes": tv_tensors.BoundingBoxes(record["ignore_boxes"], format="XYXY",
                                                     canvas_size=canvas),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        out_target = {
            "boxes": target["boxes"].as_subclass(torch.Tensor).float(),
            "labels": target["labels"],
            "ignore_boxes": target["ignore_boxes"].as_subclass(torch.Tensor).float(),
            "image_id": record["image_id"],
            "orig_size": torch.tensor(canvas, dtype=torch.int64),
            "size": torch.tensor(image.shape[-2:], dtype=torch.int64),
        }
        return image.as_subclass(torch.Tensor), out_target


# --------------------------------------------------------------------------- transforms
def build_transforms(train: bool, min_size: int, max_size: int,
                     mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """Resize keeping the ratio (shorter side ``min_size``, longer <= ``max_size``),
    flip horizontally with p=0.5 when ``train``, convert to float in [0, 1] and
    normalise with ``mean``/``std``. Works on ``(image, target)`` pairs; boxes
    (``tv_tensors.BoundingBoxes``) follow the image.
    """
    if min_size <= 0 or max_size < min_size:
        raise ValueError(f"min_size={min_size}, max_size={max_size}: expected "
                         "0 < min_size <= max_size")
    if max_size > min_size:
        resize = v2.Resize(min_size, max_size=max_size, antialias=True)
    else:  # min == max: scale = max_size / longer side (v2 wants max_size > size)
        resize = v2.Resize(size=None, max_size=max_size, antialias=True)
    steps: list = [v2.ToImage(), resize]
    if train:
        steps.append(v2.RandomHorizontalFlip(0.5))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


# --------------------------------------------------------------------------- batching
def aspect_ratio_group_ids(aspect_ratios: Sequence[float], group_factor: int) -> list[int]:
    """Bin each image's width/height ratio into ``2 * group_factor + 2`` groups.

    Bin edges are ``2 ** linspace(-1, 1, 2 * group_factor + 1)``, i.e. evenly spaced
    in log-ratio between 1/2 and 2 (torchvision's reference uses the same edges);
    ratios below 1/2 or above 2 get the outer bins. ``group_factor < 0`` puts
    every image in one group.
    """
    if group_factor < 0:
        return [0] * len(aspect_ratios)
    edges = 2.0 ** np.linspace(-1.0, 1.0, 2 * group_factor + 1)
    return np.digitize(np.asarray(aspect_ratios, dtype=np.float64), edges, right=False).tolist()


class GroupedBatchSampler(torch.utils.data.Sampler):
    """Batches whose images share an aspect-ratio group, in the sampler's order.

    Indices are taken from ``sampler`` one by one into a per-group buffer; a
    buffer that reaches ``batch_size`` is yielded. At the end the leftovers of all
    groups are yielded together in order, ``batch_size`` at a time. So every epoch
    has exactly ``ceil(len(sampler) / batch_size)`` batches, the same on every
    distributed rank (DDP would hang on unequal counts).
    """

    def __init__(self, sampler: torch.utils.data.Sampler, group_ids: Sequence[int],
                 batch_size: int) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size}: expected a positive integer")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {}
        for index in self.sampler:
            buffer = buffers.setdefault(self.group_ids[index], [])
            buffer.append(index)
            if len(buffer) == self.batch_size:
                yield list(buffer)
                buffer.clear()
        leftovers = [i for group in sorted(buffers) for i in buffers[group]]
        for start in range(0, len(leftovers), self.batch_size):
            yield leftovers[start:start + self.batch_size]

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of dataset item ``index`` in ``epoch`` of a run seeded ``seed``.

    A pure function (63 bits of sha256), so an image's random flip does not depend on
    which DataLoader worker loads it, on the worker count, or on where a run resumed.
    """
    digest = hashlib.sha256(f"sample/{seed}/{epoch}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class SeededSamples(torch.utils.data.Dataset):
    """``dataset`` indexed by ``(index, seed)``: each item is drawn under its own seed.

    The global torch RNG the transforms draw from is forked, seeded with ``seed``,
    and restored afterwards, so the caller's RNG stream is left untouched.
    """

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class EpochBatches(torch.utils.data.Sampler):
    """The batches of one epoch, from batch ``start`` on, as ``[(index, seed), ...]``.

    Wraps a batch sampler whose ``sampler`` has ``set_epoch`` (DistributedSampler):
    ``set_epoch(epoch, start)`` picks the epoch's order and skips the batches a
    resumed run already trained on. ``len`` is the number of batches left;
    ``batches_per_epoch`` the full count.
    """

    def __init__(self, batch_sampler: torch.utils.data.Sampler, seed: int) -> None:
        self.batch_sampler = batch_sampler
        self.seed = seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if not 0 <= start <= len(self.batch_sampler):
            raise ValueError(f"start={start}: expected 0 <= start <= "
                             f"{len(self.batch_sampler)} batches per epoch")
        self.batch_sampler.sampler.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    @property
    def batches_per_epoch(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for k, batch in enumerate(self.batch_sampler):
            if k >= self.start:
                yield [(i, sample_seed(self.seed, self.epoch, i)) for i in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler) - self.start


def collate_lists(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list, list]:
    """``[(image, target), ...]`` -> ``([image, ...], [target, ...])``; no padding here."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
