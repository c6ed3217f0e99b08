"""Pictures of anchors, assignment, datasets and training runs, for people who would
rather look than read.

Run ``python -m reference.visualize --help``. Four subcommands:

``anchors``
    The base anchors of ONE location of a RetinaNet flavour preset
    (:func:`reference.retinanet_anchor_preset`), drawn around the location's
    centre, one colour per aspect ratio, one panel per pyramid level. With
    ``--compare FLAVOUR`` a second row shows another flavour and the legend
    says, per anchor index ``k``, where the two differ (order or pixels).

``assign``
    An image with its ground-truth boxes and the priors an assigner makes
    positive, coloured like their gt. ``--assigner maxiou`` (default) is
    RetinaNet's assigner of the chosen flavour (mmdet :class:`reference.MaxIoUAssigner`,
    pos 0.5, neg 0.4, min_pos_iou 0, by default) on that flavour's anchors; ``--assigner dsl`` is RTMDet's
    :class:`reference.DynamicSoftLabelAssigner` on the points of
    :class:`reference.MlvlPointGenerator`, with seeded random logits and boxes.

``dataset``
    A dataset browser (as mmdet's ``browse_dataset``, detectron2's
    ``visualize_data``): per image, its gts (one colour per class, readable labels
    at any image size) and, beside it, the training transform's output for that
    image in a given epoch and seed: the exact input ``reference.train`` feeds the
    model. One PNG per image into ``--out-dir``.

``curves``
    A training run's curves from its ``log.jsonl`` (matplotlib): loss per component,
    learning rate, COCO AP per epoch; what training writes as ``curves.png``.

Conventions: boxes are ``xyxy`` float pixels of the image (``x`` right, ``y``
down); a picture may be drawn enlarged by ``scale`` and with a margin of ``pad``
image pixels around the image, so anchors that stick out stay visible. Every
``draw_*`` function returns a ``PIL.Image.Image`` (RGB) and writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from reference import validate as check
from reference.anchors import MlvlPointGenerator, anchor_inside_flags, retinanet_anchor_preset
from reference.assignment import DynamicSoftLabelAssigner

__all__ = [
    "FLAVOURS",
    "parse_box",
    "base_anchor_table",
    "draw_base_anchors",
    "Assignment",
    "assign_retinanet",
    "assign_dsl",
    "draw_assignment",
    "load_synthetic_sample",
    "main",
]

FLAVOURS = ("mmdet", "detectron2", "torchvision")
LEVEL_NAMES = ("P3", "P4", "P5", "P6", "P7")

# Distinct, readable on white and on the synthetic images' pastel backgrounds.
PALETTE = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 200, 200), (240, 50, 230), (128, 128, 0), (0, 0, 128), (170, 110, 40),
]
RATIO_COLOURS = [(230, 25, 75), (0, 130, 200), (60, 160, 60), (245, 130, 48), (145, 30, 180)]
GREY = (150, 150, 150)
BLACK = (0, 0, 0)
WHITE = (255, 255, 255)


def truetype_path() -> Optional[str]:
    """The DejaVu Sans TrueType file matplotlib ships, or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return str(path) if path.is_file() else None


def _font(size: int = 12):
    """A TrueType font of ``size`` pixels: matplotlib's DejaVu Sans where there is one,
    else PIL's own scalable default."""
    path = truetype_path()
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


# --------------------------------------------------------------------------- parsing
def parse_box(text: str) -> tuple[list[float], int]:
    """``"x1,y1,x2,y2[,label]"`` (pixels, xyxy) -> ``([x1, y1, x2, y2], label)``.

    The label defaults to 0. Raises ValueError naming the string when it does not
    have 4 or 5 numbers, a number is not finite, or ``x2 <= x1`` / ``y2 <= y1``.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) not in (4, 5):
        raise ValueError(f"box {text!r}: expected 'x1,y1,x2,y2' or 'x1,y1,x2,y2,label' (xyxy pixels)")
    try:
        coords = [float(p) for p in parts[:4]]
        label = int(parts[4]) if len(parts) == 5 else 0
    except ValueError:
        raise ValueError(f"box {text!r}: every field must be a number (label an int)") from None
    if not all(math.isfinite(c) for c in coords):
        raise ValueError(f"box {text!r}: coordinates must be finite")
    if coords[2] <= coords[0] or coords[3] <= coords[1]:
        raise ValueError(f"box {text!r}: expected x2 > x1 and y2 > y1 (xyxy, not xywh)")
    if label < 0:
        raise ValueError(f"box {text!r}: label must be >= 0")
    return coords, label


def _parse_hw(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"canvas {text!r}: expected 'H,W' (or 'HxW') positive ints") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"canvas {text!r}: expected positive H and W")
    return h, w


# --------------------------------------------------------------------------- anchors
def base_anchor_table(flavour: str, level: int) -> list[dict]:
    """The base anchors of one location of ``flavour``'s RetinaNet preset at ``level``.

    level: 0..4 for P3..P7. Returns one dict per anchor in the flavour's own order
    ``k``: ``{"k", "box" ([x1, y1, x2, y2] float, centred near (0, 0)), "size"
    (nominal side of the ratio-1 anchor), "ratio" (h / w), "ratio_index"}``.
    """
    preset = retinanet_anchor_preset(check.choice("flavour", flavour, FLAVOURS))
    if not isinstance(level, int) or not 0 <= level < len(preset.strides):
        raise ValueError(f"level: expected an int in [0, {len(preset.strides) - 1}], got {level!r}")
    boxes = preset.build().base_anchors[level]  # (A, 4) float32 xyxy
    sizes, ratios = preset.sizes[level], preset.aspect_ratios
    rows = []
    for k, box in enumerate(boxes.tolist()):
        if preset.order == "ratio_outer":
            r_i, s_i = divmod(k, len(sizes))
        else:  # size outer, ratio inner
            s_i, r_i = divmod(k, len(ratios))
        rows.append({"k": k, "box": box, "size": sizes[s_i], "ratio": ratios[r_i], "ratio_index": r_i})
    return rows


def _same_box(a: Sequence[float], b: Sequence[float], tol: float = 1e-3) -> bool:
    return max(abs(x - y) for x, y in zip(a, b)) <= tol


def _compare_lines(rows: list[dict], other: list[dict], other_name: str) -> list[str]:
    """Per anchor ``k``: how this flavour's anchor relates to ``other``'s."""
    out = []
    for row in rows:
        twin = other[row["k"]] if row["k"] < len(other) else None
        if twin is not None and _same_box(row["box"], twin["box"]):
            out.append("same")
            continue
        # Same (size, ratio) elsewhere in the other flavour's order?
        match = [o for o in other if o["ratio"] == row["ratio"]
                 and abs(o["size"] - row["size"]) < 1.0]
        if match and match[0]["k"] != row["k"]:
            o = match[0]
            diff = max(abs(x - y) for x, y in zip(row["box"], o["box"]))
            note = f"= {other_name} k={o['k']}"
            out.append(note if diff <= 1e-3 else f"{note}, off {diff:.2f}px")
        elif match:
            diff = max(abs(x - y) for x, y in zip(row["box"], match[0]["box"]))
            out.append(f"off {diff:.2f}px")
        else:
            out.append("no twin")
    return out


def draw_base_anchors(flavour: str, levels: Optional[Sequence[int]] = None,
                      compare: Optional[str] = None, panel: int = 300) -> Image.Image:
    """Base anchors of one location, one panel per level (columns) and flavour (rows).

    flavour / compare: "mmdet", "detectron2" or "torchvision"; ``compare`` adds a
    second row and per-anchor notes on where the two flavours differ.
    levels: indices 0..4 (P3..P7); default all five.
    panel: side in pixels of each drawing square. Inside one column both rows use
    the same scale, so equal boxes look equal. Grey dots mark the neighbouring
    locations (one stride apart); the black cross is the location itself,
    ``(0, 0)`` of the base anchors. Colour = aspect ratio (h / w); the legend
    lists every anchor ``k`` as ``ratio, nominal size -> w x h`` in pixels.
    """
    flavours = [check.choice("flavour", flavour, FLAVOURS)] + (
        [check.choice("compare", compare, FLAVOURS)] if compare else [])
    preset = retinanet_anchor_preset(flavours[0])
    levels = list(range(len(preset.strides))) if levels is None else list(levels)
    if not levels:
        raise ValueError("levels: expected at least one level")
    tables = {f: {lv: base_anchor_table(f, lv) for lv in levels} for f in flavours}
    num_anchors = max(len(t) for f in flavours for t in tables[f].values())

    font, small = _font(14), _font(12)
    title_h, line_h, gap = 40, 15, 12
    legend_h = line_h * (num_anchors + 1) + 6
    cell_w, cell_h = panel + 2 * gap, title_h + panel + legend_h + gap
    header_h = 48
    width = max(cell_w * len(levels), 560)
    image = Image.new("RGB", (width, header_h + cell_h * len(flavours)), WHITE)
    draw = ImageDraw.Draw(image)
    ratios = preset.aspect_ratios
    draw.text((gap, 6), "base anchors of ONE location, xyxy px around (0, 0) (black cross)",
              fill=BLACK, font=font)
    key = "colour = aspect ratio h/w:"
    draw.text((gap, 26), key, fill=BLACK, font=font)
    for i, r in enumerate(ratios):  # colour key
        x = gap + draw.textlength(key, font=font) + 12 + 60 * i
        draw.rectangle([x, 28, x + 14, 40], outline=RATIO_COLOURS[i], width=3)
        draw.text((x + 18, 26), f"{r:g}", fill=RATIO_COLOURS[i], font=font)

    for col, level in enumerate(levels):
        stride = preset.strides[level]
        extent = max(max(abs(c) for c in row["box"]) for f in flavours for row in tables[f][level])
        extent = max(extent, stride * 1.5)
        px = (panel / 2 - 6) / extent  # screen pixels per image pixel, same for both rows
        for row_i, f in enumerate(flavours):
            ox, oy = col * cell_w + gap, header_h + row_i * cell_h
            name = LEVEL_NAMES[level] if level < len(LEVEL_NAMES) else f"level {level}"
            p = retinanet_anchor_preset(f)
            draw.text((ox, oy), f"{f}  {name}  stride {stride}", fill=BLACK, font=font)
            draw.text((ox, oy + 18), f"order {p.order.replace('_', ' ')}"
                      f"{', rounded corners' if p.rounds_base_anchors else ''}; drawn at {px:.2f}x",
                      fill=(90, 90, 90), font=small)
            top = oy + title_h
            draw.rectangle([ox, top, ox + panel, top + panel], outline=(210, 210, 210))
            cx, cy = ox + panel / 2, top + panel / 2
            steps = int(extent // stride)
            for i in range(-steps, steps + 1):  # neighbouring locations
                for j in range(-steps, steps + 1):
                    x, y = cx + i * stride * px, cy + j * stride * px
                    draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(190, 190, 190))
            for row in tables[f][level]:
                x1, y1, x2, y2 = row["box"]
                draw.rectangle([cx + x1 * px, cy + y1 * px, cx + x2 * px, cy + y2 * px],
                               outline=RATIO_COLOURS[row["ratio_index"] % len(RATIO_COLOURS)], width=2)
            draw.line([cx - 6, cy, cx + 6, cy], fill=BLACK, width=2)
            draw.line([cx, cy - 6, cx, cy + 6], fill=BLACK, width=2)
            notes = None
            if len(flavours) == 2:
                other = flavours[1 - row_i]
                notes = _compare_lines(tables[f][level], tables[other][level], other)
            ly = top + panel + 6
            for row in tables[f][level]:
                x1, y1, x2, y2 = row["box"]
                text = (f"k={row['k']:<2d} r={row['ratio']:g} s={row['size']:.1f} -> "
                        f"{x2 - x1:.1f}x{y2 - y1:.1f}")
                if notes is not None:
                    text += f"  [{notes[row['k']]}]"
                draw.text((ox, ly), text, fill=RATIO_COLOURS[row["ratio_index"] % len(RATIO_COLOURS)],
                          font=small)
                ly += line_h
    return image


# --------------------------------------------------------------------------- assignment
@dataclasses.dataclass
class Assignment:
    """What one assigner decided for one image (everything on CPU).

    priors: ``(N, 4)`` float xyxy anchors, or for points ``(N, 4)``
        ``[x, y, stride_w, stride_h]`` (then ``is_points`` is True).
    gt_inds: ``(N,)`` int64, mmdet encoding: ``k + 1`` positive for gt ``k``,
        ``0`` negative, ``-1`` ignored. Priors the assigner never saw (outside
        the image per ``anchor_inside_flags``) are ``0`` and ``used`` False.
    used: ``(N,)`` bool, the priors handed to the assigner.
    levels: ``(N,)`` int64, pyramid level index of each prior.
    gt_boxes: ``(G, 4)`` float xyxy; gt_labels: ``(G,)`` int64.
    """

    priors: torch.Tensor
    gt_inds: torch.Tensor
    used: torch.Tensor
    levels: torch.Tensor
    gt_boxes: torch.Tensor
    gt_labels: torch.Tensor
    is_points: bool = False

    def positives_per_gt(self) -> list[int]:
        """Number of positive priors of each gt, ``len == G``."""
        return [int((self.gt_inds == g + 1).sum()) for g in range(len(self.gt_boxes))]

    def positives_per_level(self, gt: int) -> dict[int, int]:
        """``{level index: positives}`` for gt ``gt`` (levels without any left out)."""
        lv = self.levels[self.gt_inds == gt + 1]
        return {int(v): int((lv == v).sum()) for v in lv.unique()}


def _featmap_sizes(image_hw: tuple[int, int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """``ceil(H / s), ceil(W / s)`` per stride: what a stride-s FPN level has."""
    h, w = image_hw
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


def _gt_tensors(gt_boxes, gt_labels):
    boxes = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)  # (G, 4)
    labels = (torch.zeros(len(boxes), dtype=torch.int64) if gt_labels is None
              else torch.as_tensor(gt_labels, dtype=torch.int64).reshape(-1))
    if len(labels) != len(boxes):
        raise ValueError(f"gt_labels: expected {len(boxes)} labels, got {len(labels)}")
    return boxes, labels


def assign_retinanet(image_hw: tuple[int, int], gt_boxes, gt_labels=None, flavour: str = "mmdet",
                     allowed_border: float = -1) -> Assignment:
    """RetinaNet's assignment of one ``H x W`` image.

    Anchors: the flavour's RetinaNet preset on feature maps of ``ceil(H / stride)
    x ceil(W / stride)`` (mmdet's :class:`AnchorGenerator` by default), kept by
    :func:`anchor_inside_flags` with ``allowed_border`` (RetinaNet: -1, keep all).
    Assigner: the flavour's RetinaNet assigner, the one its detector trains with
    (``RETINANET_FLAVOURS[flavour].assigner``: mmdet ``MaxIoUAssigner(0.5, 0.4,
    min_pos_iou=0)``, detectron2 ``Matcher`` / torchvision ``TorchvisionMatcher``
    through ``MatcherAssigner``).
    gt_boxes: ``(G, 4)`` xyxy pixels; gt_labels: ``(G,)`` ints or None (all 0).
    """
    from reference.detectors.retinanet import RETINANET_FLAVOURS

    preset = retinanet_anchor_preset(check.choice("flavour", flavour, FLAVOURS))
    boxes, labels = _gt_tensors(gt_boxes, gt_labels)
    generator = preset.build()
    sizes = _featmap_sizes(image_hw, preset.strides)
    per_level = generator.grid_priors(sizes, image_size=image_hw)
    valid = torch.cat(generator.valid_flags(sizes, image_hw))  # all True but for mmdet
    anchors = torch.cat(per_level)  # (N, 4)
    levels = torch.cat([torch.full((len(a),), i, dtype=torch.int64) for i, a in enumerate(per_level)])
    used = anchor_inside_flags(anchors, valid, image_hw, allowed_border=allowed_border)  # (N,)
    result = RETINANET_FLAVOURS[flavour].assigner.assign(anchors[used], boxes, gt_labels=labels)
    gt_inds = torch.zeros(len(anchors), dtype=torch.int64)
    gt_inds[used] = result.gt_inds
    return Assignment(anchors, gt_inds, used, levels, boxes, labels)


def assign_dsl(image_hw: tuple[int, int], gt_boxes, gt_labels=None, seed: int = 0,
               num_classes: int = 4, strides: Sequence[int] = (8, 16, 32)) -> Assignment:
    """RTMDet's DynamicSoftLabelAssigner on the points of one ``H x W`` image.

    Priors: ``MlvlPointGenerator(strides, offset=0)`` (RTMDet's setting) with
    strides. Predictions are random but seeded (``torch.Generator`` with
    ``seed``): logits ``(N, C)`` ~ N(0, 1); each point's predicted box is centred
    on the point with sides ``stride * U(2, 8)``. Real predictions would make the
    choice sharper; the geometry (only points strictly inside a gt are
    candidates, centre prior, dynamic k) is the same.
    """
    boxes, labels = _gt_tensors(gt_boxes, gt_labels)
    if len(labels) and int(labels.max()) >= num_classes:
        num_classes = int(labels.max()) + 1
    gen = MlvlPointGenerator(list(strides), offset=0.0)
    sizes = _featmap_sizes(image_hw, strides)
    per_level = gen.grid_priors(sizes, with_stride=True)  # list of (H*W, 4)
    priors = torch.cat(per_level)  # (N, 4) [x, y, sw, sh]
    levels = torch.cat([torch.full((len(p),), i, dtype=torch.int64) for i, p in enumerate(per_level)])
    rng = torch.Generator().manual_seed(seed)
    n = len(priors)
    logits = torch.randn(n, num_classes, generator=rng)  # (N, C)
    half = priors[:, 2:3] * (2 + 6 * torch.rand(n, 2, generator=rng)) / 2  # (N, 2) half w, half h
    decoded = torch.cat([priors[:, :2] - half, priors[:, :2] + half], dim=1)  # (N, 4)
    result = DynamicSoftLabelAssigner().assign(logits, decoded, priors, boxes, labels)
    used = torch.ones(n, dtype=torch.bool)
    return Assignment(priors, result.gt_inds.clone(), used, levels, boxes, labels, is_points=True)


def draw_assignment(image: Image.Image, assignment: Assignment, scale: float = 4.0, pad: int = 32,
                    show_ignored: bool = False, class_names: Optional[Sequence[str]] = None,
                    title: str = "") -> Image.Image:
    """The image with its gts (thick) and their positive priors (thin, same colour).

    image: the ``W x H`` picture the boxes refer to (xyxy pixels of it).
    scale: screen pixels per image pixel; pad: margin in image pixels around the
    image (anchors may stick out of it); the image is faded so the boxes stand
    out. Anchors are drawn as thin boxes with a dot at their centre; points as
    dots (positives filled, radius growing with the stride, candidates inside a gt as grey rings when
    ``show_ignored``). ``show_ignored`` draws the ignored anchors (best IoU in
    [0.4, 0.5)) in grey. The returned image's ``info["positives_drawn"]`` is the
    list of priors drawn per gt (== ``assignment.positives_per_gt()``).
    """
    if scale <= 0 or pad < 0:
        raise ValueError(f"scale must be > 0 and pad >= 0, got scale={scale}, pad={pad}")
    w, h = image.size
    header = 22 if title else 0
    legend_h = 18 * max(1, len(assignment.gt_boxes)) + 8
    size = (round((w + 2 * pad) * scale), round((h + 2 * pad) * scale) + header + legend_h)
    canvas = Image.new("RGB", size, (235, 235, 235))
    # The picture is faded towards white so that thin coloured boxes stay visible on it.
    faded = Image.blend(image.convert("RGB"), Image.new("RGB", image.size, WHITE), 0.55)
    canvas.paste(faded.resize((round(w * scale), round(h * scale)), Image.NEAREST),
                 (round(pad * scale), round(pad * scale) + header))
    draw = ImageDraw.Draw(canvas)
    font, small = _font(14), _font(12)

    def to_screen(x, y):
        return (x + pad) * scale, (y + pad) * scale + header

    def rect(box, colour, width):
        x1, y1 = to_screen(box[0], box[1])
        x2, y2 = to_screen(box[2], box[3])
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)

    x0, y0 = to_screen(0, 0)
    x1, y1 = to_screen(w, h)
    draw.rectangle([x0 - 1, y0 - 1, x1, y1], outline=(60, 60, 60))
    if title:
        draw.text((6, 4), title, fill=BLACK, font=font)
    gt_inds, priors = assignment.gt_inds, assignment.priors
    if show_ignored:
        if assignment.is_points:
            inside = _points_inside_any(priors, assignment.gt_boxes) & (gt_inds <= 0)
            for x, y in priors[inside, :2].tolist():
                sx, sy = to_screen(x, y)
                draw.ellipse([sx - 3, sy - 3, sx + 3, sy + 3], outline=GREY, width=1)
        else:
            for box in priors[assignment.used & (gt_inds == -1)].tolist():
                rect(box, GREY, 1)
    drawn = []
    for g in range(len(assignment.gt_boxes)):
        colour = PALETTE[g % len(PALETTE)]
        mine = priors[gt_inds == g + 1]
        for prior in mine.tolist():
            if assignment.is_points:
                sx, sy = to_screen(prior[0], prior[1])
                r = 3 + prior[2] / 8
                draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=colour, outline=BLACK)
            else:  # the box, and its centre as a dot so one can see which location it is
                rect(prior, colour, 1)
                sx, sy = to_screen((prior[0] + prior[2]) / 2, (prior[1] + prior[3]) / 2)
                draw.ellipse([sx - 3, sy - 3, sx + 3, sy + 3], fill=colour, outline=BLACK)
        drawn.append(len(mine))
    for g, box in enumerate(assignment.gt_boxes.tolist()):
        rect(box, PALETTE[g % len(PALETTE)], 3)
        sx, sy = to_screen(box[0], box[1])
        draw.text((sx + 3, sy + 2), f"gt{g}", fill=PALETTE[g % len(PALETTE)], font=font,
                  stroke_width=2, stroke_fill=WHITE)
    ly = size[1] - legend_h + 4
    kind = "points" if assignment.is_points else "anchors"
    if not len(assignment.gt_boxes):
        draw.text((6, ly), f"no gt boxes: every {kind[:-1]} is negative", fill=BLACK, font=small)
    for g in range(len(assignment.gt_boxes)):
        label = int(assignment.gt_labels[g])
        name = class_names[label] if class_names and label < len(class_names) else f"class {label}"
        per_level = ", ".join(f"{LEVEL_NAMES[lv] if lv < 5 else lv}: {c}"
                              for lv, c in assignment.positives_per_level(g).items())
        where = ""
        if not assignment.is_points:  # several anchors share one location
            centres = assignment.priors[gt_inds == g + 1]
            centres = torch.stack([centres[:, 0] + centres[:, 2], centres[:, 1] + centres[:, 3]], 1)
            where = f" at {len(centres.unique(dim=0))} locations (dots)"
        draw.text((6, ly), f"gt{g} ({name}): {drawn[g]} positive {kind}{where}  ({per_level or 'none'})",
                  fill=PALETTE[g % len(PALETTE)], font=small)
        ly += 18
    canvas.info["positives_drawn"] = drawn
    return canvas


def _points_inside_any(priors: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: point strictly inside at least one gt (DSL's candidates)."""
    if not len(gt_boxes):
        return torch.zeros(len(priors), dtype=torch.bool)
    x, y = priors[:, 0:1], priors[:, 1:2]  # (N, 1)
    g = gt_boxes[None]  # (1, G, 4)
    inside = (x > g[..., 0]) & (y > g[..., 1]) & (x < g[..., 2]) & (y < g[..., 3])  # (N, G)
    return inside.any(dim=1)


# --------------------------------------------------------------------------- boxes on images
def class_colour(label: int) -> tuple[int, int, int]:
    """One distinct colour per class: ``PALETTE`` for labels 0..9, then saturated hues
    spaced by the golden angle (the first 20 are at least 60 apart in RGB)."""
    label = int(label)
    if label < 0:
        raise ValueError(f"label: expected >= 0, got {label}")
    if label < len(PALETTE):
        return PALETTE[label]
    import colorsys

    hue = ((label - len(PALETTE)) * 0.618033988749895 + 0.05) % 1.0  # 0.05: away from PALETTE
    return tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, 1.0, 0.9))


def _text_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``fill`` (relative luminance)."""
    r, g, b = fill
    return BLACK if 0.299 * r + 0.587 * g + 0.114 * b > 150 else WHITE


def draw_boxes(picture: Image.Image, boxes, labels, class_names: Sequence[str], scores=None, *,
               min_side: int = 512, ignore_boxes=None, title: str = "") -> Image.Image:
    """The picture with labelled boxes, readable whatever the image size.

    boxes: ``(K, 4)`` xyxy pixels of ``picture``; labels: ``(K,)`` ints indexing
    ``class_names``; scores: ``(K,)`` or None (ground truth: names only).
    ignore_boxes: ``(M, 4)`` crowd regions, drawn dashed grey.
    min_side: a picture whose shorter side is under this is enlarged to it first
    (bicubic), so a 128 px image does not get 3 px letters; the font (DejaVu
    Sans) and the line width grow with the drawn size. Each class keeps one colour
    (``class_colour``); a label is written on a patch of that colour above the box
    (inside it when the box touches the top). ``info``: ``scale`` (drawn pixels per
    image pixel), ``font_size`` (pixels), ``colours`` ({class name: RGB}).
    """
    import torch as _torch

    boxes = _torch.as_tensor(boxes, dtype=_torch.float32).reshape(-1, 4)
    labels = [int(v) for v in _torch.as_tensor(labels).reshape(-1).tolist()]
    if len(labels) != len(boxes):
        raise ValueError(f"labels: expected {len(boxes)} labels (one per box), got {len(labels)}")
    for k in labels:
        if not 0 <= k < len(class_names):
            raise ValueError(f"labels: {k} is not a class index of {list(class_names)}")
    scores = None if scores is None else _torch.as_tensor(scores).reshape(-1).tolist()
    w, h = picture.size
    scale = max(1.0, min_side / max(1, min(w, h)))
    shown = picture.convert("RGB")
    if scale > 1:
        shown = shown.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    side = min(shown.size)
    font_size = max(13, min(40, round(side / 32)))
    line = max(2, round(side / 256))
    font = _font(font_size)
    header = round(font_size * 1.6) if title else 0
    canvas = Image.new("RGB", (shown.width, shown.height + header), WHITE)
    canvas.paste(shown, (0, header))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, (header - font_size) // 2), title, fill=BLACK, font=font)

    def screen(box):
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        return x1, y1 + header, x2, y2 + header

    if ignore_boxes is not None:
        for box in _torch.as_tensor(ignore_boxes, dtype=_torch.float32).reshape(-1, 4).tolist():
            x1, y1, x2, y2 = screen(box)
            dash = 3 * line
            for x in range(int(x1), int(x2), 2 * dash):  # dashed: crowd, never a positive
                draw.line([x, y1, min(x + dash, x2), y1], fill=GREY, width=line)
                draw.line([x, y2, min(x + dash, x2), y2], fill=GREY, width=line)
            for y in range(int(y1), int(y2), 2 * dash):
                draw.line([x1, y, x1, min(y + dash, y2)], fill=GREY, width=line)
                draw.line([x2, y, x2, min(y + dash, y2)], fill=GREY, width=line)
    colours = {}
    order = range(len(boxes)) if scores is None else sorted(range(len(boxes)),
                                                           key=lambda i: scores[i])
    for i in order:  # the best detection is drawn last, on top
        colour = class_colour(labels[i])
        name = class_names[labels[i]]
        colours[name] = colour
        x1, y1, x2, y2 = screen(boxes[i].tolist())
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        text = name if scores is None else f"{name} {scores[i]:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        pad = max(2, font_size // 6)
        ty = y1 - th - 2 * pad if y1 - th - 2 * pad >= header else y1
        tx = min(max(x1, 0), canvas.width - tw - 2 * pad)
        draw.rectangle([tx, ty, tx + tw + 2 * pad, ty + th + 2 * pad], fill=colour)
        draw.text((tx + pad - left, ty + pad - top), text, fill=_text_colour(colour), font=font)
    canvas.info.update(scale=scale, font_size=font_size, colours=colours)
    return canvas


# --------------------------------------------------------------------------- data
# The synthetic dataset the CLI reads (the same one training writes to the cache).
SYNTHETIC_CONFIG = None  # None = reference.data.SyntheticShapesConfig()


def load_synthetic_sample(index: int = 0, split: str = "val"):
    """``(PIL image, gt boxes (G, 4) xyxy, labels (G,), class names)`` of one
    synthetic-shapes image; writes the dataset to the cache the first time."""
    from reference.data import CocoDetection, SyntheticShapesConfig, ensure_synthetic_dataset

    if split not in ("train", "val"):
        raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
    root = ensure_synthetic_dataset(SYNTHETIC_CONFIG or SyntheticShapesConfig())
    dataset = CocoDetection(root / f"{split}2017", root / "annotations" / f"instances_{split}2017.json")
    if not 0 <= index < len(dataset):
        raise ValueError(f"index: expected 0 <= index < {len(dataset)} ({split} split), got {index}")
    tensor, target = dataset[index]  # (3, H, W) uint8
    picture = Image.fromarray(tensor.permute(1, 2, 0).numpy())
    return picture, target["boxes"], target["labels"], dataset.class_names


# --------------------------------------------------------------------------- dataset browser
def _denormalise(image) -> Image.Image:
    """A normalised ``(3, H, W)`` float tensor (``build_transforms``) back to a picture."""
    from reference.data import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = ((image.float() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())


def browse_sample(dataset, index: int, min_size: int, max_size: int, *, seed: int = 0,
                  epoch: int = 0, augment: bool = True, min_side: int = 384) -> Image.Image:
    """One dataset image as training sees it: left, the file with its gts (crowd
    regions dashed grey); right (``augment``), the training transform's output for
    that image in ``epoch`` of a run seeded ``seed`` (the same seed rule as
    ``reference.data.SeededSamples``: resize to ``min_size``/``max_size``, random
    flip), with the boxes it carries. ``dataset``: a ``CocoDetection`` without
    transforms (its ``transforms`` are set and restored here). ``info``:
    ``flipped`` (bool or None), ``size`` (H, W after the transform), ``boxes``.
    """
    from reference.data import build_transforms, sample_seed

    if not 0 <= index < len(dataset):
        raise ValueError(f"index: expected 0 <= index < {len(dataset)}, got {index}")
    record, names = dataset.records[index], dataset.class_names
    saved = dataset.transforms
    try:
        dataset.transforms = None
        raw, target = dataset[index]  # (3, H, W) uint8
        left = draw_boxes(Image.fromarray(raw.permute(1, 2, 0).numpy()), target["boxes"],
                          target["labels"], names, min_side=min_side,
                          ignore_boxes=target["ignore_boxes"],
                          title=f"{record['file_name']}  {raw.shape[-1]}x{raw.shape[-2]}, "
                                f"{len(target['labels'])} gts")
        panels, info = [left], {"flipped": None, "size": tuple(raw.shape[-2:]), "boxes": None}
        if augment:
            dataset.transforms = build_transforms(False, min_size, max_size)
            _, plain = dataset[index]
            dataset.transforms = build_transforms(True, min_size, max_size)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(seed, epoch, index))
                image, aug = dataset[index]  # (3, h, w) float, normalised
            flipped = bool(len(aug["boxes"])) and not torch.equal(aug["boxes"], plain["boxes"])
            h, w = image.shape[-2:]
            right = draw_boxes(_denormalise(image), aug["boxes"], aug["labels"], names,
                               min_side=min_side, ignore_boxes=aug["ignore_boxes"],
                               title=f"train input, epoch {epoch} seed {seed}: {w}x{h}"
                                     f"{', flipped' if flipped else ''}")
            panels.append(right)
            info = {"flipped": flipped, "size": (int(h), int(w)), "boxes": aug["boxes"]}
    finally:
        dataset.transforms = saved
    gap = 12
    sheet = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1),
                              max(p.height for p in panels)), WHITE)
    x = 0
    for panel in panels:
        sheet.paste(panel, (x, 0))
        x += panel.width + gap
    sheet.info.update(info, colours={**left.info["colours"]}, font_size=left.info["font_size"])
    return sheet


def _run_dataset(args) -> list[Path]:
    """The ``dataset`` subcommand: one sheet per image into ``--out-dir``."""
    from reference.data import CocoDetection, resolve_data_paths
    from reference.train import _image_sizes

    if args.num < 1:
        raise ValueError(f"--num: expected >= 1, got {args.num}")
    if args.ann or args.images:
        if not (args.ann and args.images):
            raise ValueError("--ann and --images go together (or pass --data-path)")
        ann, images, synthetic = args.ann, args.images, False
    else:
        paths = resolve_data_paths(args.data_path)
        ann = paths.train_ann if args.split == "train" else paths.val_ann
        images = paths.train_images if args.split == "train" else paths.val_images
        synthetic = paths.synthetic
    # training leaves out images without a usable box, so its indices (and seeds) are these
    dataset = CocoDetection(images, ann, skip_empty=args.split == "train")
    if not len(dataset):
        raise ValueError(f"{ann}: no image to show")
    sizes = argparse.Namespace(min_size=args.min_size, max_size=args.max_size)
    min_size, max_size, note = _image_sizes(sizes, synthetic, dataset)
    indices = args.index if args.index else list(range(min(args.num, len(dataset))))
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out-dir {args.out_dir!r}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = [0] * dataset.num_classes
    for record in dataset.records:
        for label in record["labels"].tolist():
            counts[label] += 1
    print(f"{ann}: {len(dataset)} images, {sum(counts)} boxes ("
          + ", ".join(f"{n} {c}" for n, c in zip(dataset.class_names, counts)) + ")")
    print(note or f"train transform: shorter side {min_size}, longer at most {max_size}, "
                  "random horizontal flip")
    written = []
    for index in indices:
        sheet = browse_sample(dataset, index, min_size, max_size, seed=args.seed,
                              epoch=args.epoch, augment=not args.no_augment)
        stem = Path(dataset.records[index]["file_name"]).stem
        path = out_dir / f"{index:04d}_{stem}.png"
        sheet.save(path, format="PNG")
        written.append(path)
        flip = sheet.info["flipped"]
        print(f"{path}  ({len(dataset.records[index]['labels'])} gts"
              + ("" if flip is None else f", {'flipped' if flip else 'not flipped'}") + ")")
    return written


# --------------------------------------------------------------------------- curves
def read_log(path) -> list[dict]:
    """The records of a training ``log.jsonl`` (``reference.train``), in order.

    A line torn by a kill is skipped. Raises ValueError naming the file when it is
    missing or holds no record.
    """
    import json

    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    if not path.is_file():
        raise ValueError(f"log {str(path)!r}: no such file (expected a run's log.jsonl)")
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            records.append(entry)
    if not records:
        raise ValueError(f"log {str(path)!r}: no JSON record in it")
    return records


AP_CURVES = (("AP", "AP@[.5:.95]"), ("AP50", "AP50"), ("AP75", "AP75"))


def draw_curves(records: Sequence[dict], title: Optional[str] = None):
    """A matplotlib ``Figure`` of one training run, from its log records.

    Three panels: every loss component and their total per logged step; the
    learning rate per step; COCO bbox AP, AP50 and AP75 per epoch, each AP point
    labelled with its value (up to 6 epochs; beyond, the best and the last). Dotted vertical lines mark epoch ends on the step
    axes. The last record of a step wins (a resumed run logs no step twice, but a
    hand-joined log might). Nothing is shown on screen (Agg canvas).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    steps = {int(r["step"]): r for r in records if r.get("type") == "step" and "step" in r}
    steps = [steps[k] for k in sorted(steps)]
    epochs = {int(r["epoch"]): r for r in records if r.get("type") == "epoch" and "epoch" in r}
    epochs = [epochs[k] for k in sorted(epochs)]
    start = next((r for r in reversed(records) if r.get("type") == "start"), {})
    if title is None:
        args = start.get("args") or {}
        title = (f"{args.get('model', 'training run')}: {start.get('train_images', '?')} train "
                 f"images, {start.get('steps_per_epoch', '?')} steps/epoch x "
                 f"{args.get('epochs', len(epochs) or '?')} epochs")

    fig = Figure(figsize=(15, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_lr, ax_ap = fig.subplots(1, 3)
    fig.suptitle(title, fontsize=13)
    xs = [r["step"] for r in steps]
    ax_loss.plot(xs, [r.get("loss", math.nan) for r in steps], color="black", lw=2,
                 label="total")
    names = sorted({n for r in steps for n in (r.get("losses") or {})})
    for i, name in enumerate(names):
        colour = [c / 255 for c in PALETTE[i % len(PALETTE)]]
        ax_loss.plot(xs, [(r.get("losses") or {}).get(name, math.nan) for r in steps],
                     color=colour, lw=1.5, label=name)
    ax_lr.plot(xs, [r.get("lr", math.nan) for r in steps], color=[c / 255 for c in PALETTE[2]],
               lw=2)
    for ax, ylabel, name in ((ax_loss, "loss", "loss per logged step"),
                             (ax_lr, "learning rate", "learning rate (warmup, schedule)")):
        for r in epochs:
            ax.axvline(r.get("step", math.nan), color="0.6", ls=":", lw=1)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not steps:
            ax.text(0.5, 0.5, "no step logged", transform=ax.transAxes, ha="center")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if epochs:  # one legend entry for the dotted epoch-end lines
        ax_loss.plot([], [], color="0.6", ls=":", lw=1, label="epoch end")
    if steps:
        ax_loss.legend(loc="upper right", fontsize=9)
    ax_loss.set_ylim(bottom=0)
    ax_lr.set_ylim(bottom=0)

    evaluated = [r for r in epochs if isinstance(r.get("coco"), dict)]
    ax_ap.set_title("COCO bbox AP on val, per epoch")
    ax_ap.set_xlabel("epoch")
    ax_ap.set_ylabel("AP")
    ax_ap.set_ylim(0, 1.1)
    ax_ap.grid(True, alpha=0.3)
    ax_ap.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # 1 epoch: "1"
    if evaluated:
        ex = [r["epoch"] + 1 for r in evaluated]
        for i, (key, label) in enumerate(AP_CURVES):
            ys = [float(r["coco"].get(key, math.nan)) for r in evaluated]
            colour = [c / 255 for c in PALETTE[i]]
            ax_ap.plot(ex, ys, marker="o", color=colour, lw=2 if key == "AP" else 1.2,
                       label=label)
            if key == "AP":  # the headline number: at every point, or best and last
                marked = range(len(ys))
                if len(ys) > 6:  # more would overlap
                    finite = [i for i, y in enumerate(ys) if math.isfinite(y)] or [len(ys) - 1]
                    marked = sorted({max(finite, key=lambda i: ys[i]), len(ys) - 1})
                for x, y in ((ex[i], ys[i]) for i in marked):
                    ax_ap.annotate(f"{y:.3f}", (x, y), textcoords="offset points",
                                   xytext=(0, 7), ha="center", va="bottom", fontsize=9,
                                   color=colour, fontweight="bold")
        ax_ap.legend(loc="upper left", fontsize=9)
        ax_ap.set_xlim(0.5, max(ex) + 0.8)  # room for the last value
    else:
        ax_ap.text(0.5, 0.5, "no evaluation logged\n(--no-eval, or no epoch finished)",
                   transform=ax_ap.transAxes, ha="center", va="center")
    return fig


def save_curves(log, out) -> Path:
    """Draw ``draw_curves`` of a log (path, run folder or records) into a PNG at ``out``
    (written to a temporary name, then renamed); returns the path."""
    records = log if isinstance(log, list) else read_log(log)
    out = Path(out)
    fig = draw_curves(records)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, out)
    return out


# --------------------------------------------------------------------------- CLI
def _writable_out(path: str) -> Path:
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ValueError(f"--out {path!r}: is a directory, expected a .png file path")
    if not parent.is_dir():
        raise ValueError(f"--out {path!r}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ValueError(f"--out {path!r}: not writable")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference.visualize",
        description="Draw detection building blocks, datasets and training curves as PNG "
                    "pictures (PIL, matplotlib for curves). Boxes are xyxy "
                    "pixels: x1,y1 top-left, x2,y2 bottom-right, y pointing down.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m reference.visualize anchors --flavour mmdet --out anchors.png\n"
               "  python -m reference.visualize anchors --flavour mmdet --compare torchvision "
               "--level 0 --out diff.png\n"
               "  python -m reference.visualize assign --index 3 --show-ignored --out assign.png\n"
               "  python -m reference.visualize assign --gt 10,20,60,70 --gt 70,30,120,90,1 "
               "--out blank.png\n"
               "  python -m reference.visualize assign --assigner dsl --index 3 --out dsl.png\n"
               "  python -m reference.visualize dataset --num 8 --out-dir browse/\n"
               "  python -m reference.visualize dataset --ann my/train.json --images my/train/ "
               "--out-dir browse/\n"
               "  python -m reference.visualize curves --log runs/train --out curves.png",
    )
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{anchors,assign,curves,dataset}")

    p = sub.add_parser("anchors", help="base anchors of one location, per level",
                       description="Draw the base anchors of one feature-map location of a RetinaNet "
                                   "flavour preset, centred on (0, 0), one colour per aspect ratio "
                                   "(h/w), one panel per level P3..P7. Grey dots: neighbouring "
                                   "locations one stride apart. The legend lists every anchor k in "
                                   "the flavour's own order as 'r=ratio s=nominal size -> w x h'.")
    p.add_argument("--flavour", default="mmdet", help=f"one of {', '.join(FLAVOURS)} (default mmdet)")
    p.add_argument("--compare", metavar="FLAVOUR", default=None,
                   help="a second flavour drawn below; each legend line then says, per k, 'same', "
                        "'= other k=j' (same box, different position in the order) or 'off N px' "
                        "(largest corner difference, from rounding/truncation, e.g. torchvision)")
    p.add_argument("--level", type=int, default=None, metavar="L",
                   help="draw only level L (0..4 = P3..P7); default all five")
    p.add_argument("--panel", type=int, default=300, help="side of each drawing in pixels (default 300)")
    p.add_argument("--out", required=True, help="PNG file to write (its folder must exist)")

    a = sub.add_parser("assign", help="gt boxes and the priors an assigner makes positive",
                       description="Draw an image, its gt boxes (thick, gtK) and the priors the "
                                   "assigner makes positive for each gt (thin, same colour). Without "
                                   "--gt the image is synthetic-shapes image --index (written to "
                                   "the detspec cache the first time, ~10 s); with --gt a blank "
                                   "--canvas. Prints the positives per gt and per level.")
    a.add_argument("--assigner", choices=("maxiou", "dsl"), default="maxiou",
                   help="maxiou: RetinaNet anchors + MaxIoUAssigner(pos 0.5, neg 0.4, min_pos_iou 0); "
                        "dsl: RTMDet points (strides 8,16,32, offset 0) + DynamicSoftLabelAssigner "
                        "with seeded random logits/boxes, chosen points drawn as dots")
    a.add_argument("--flavour", default="mmdet",
                   help=f"anchor preset for maxiou: one of {', '.join(FLAVOURS)} (default mmdet)")
    a.add_argument("--gt", action="append", default=None, metavar="x1,y1,x2,y2[,label]",
                   help="a gt box in xyxy pixels (repeatable); switches to a blank canvas")
    a.add_argument("--canvas", default="128,128", metavar="H,W",
                   help="blank canvas size for --gt (default 128,128)")
    a.add_argument("--index", type=int, default=0, help="synthetic image index (default 0)")
    a.add_argument("--split", default="val", choices=("train", "val"), help="synthetic split (default val)")
    a.add_argument("--allowed-border", type=float, default=-1,
                   help="anchor_inside_flags border; -1 (RetinaNet) keeps anchors sticking out, "
                        "0 drops every anchor not fully inside the image")
    a.add_argument("--show-ignored", action="store_true",
                   help="also draw ignored anchors (best IoU in [0.4, 0.5)) in grey; for dsl, "
                        "grey rings on candidate points (inside a gt) that were not chosen")
    a.add_argument("--seed", type=int, default=0, help="seed of the random predictions for dsl")
    a.add_argument("--scale", type=float, default=4.0, help="screen pixels per image pixel (default 4)")
    a.add_argument("--pad", type=int, default=32, help="margin around the image in image pixels (default 32)")
    a.add_argument("--out", required=True, help="PNG file to write (its folder must exist)")

    b = sub.add_parser("dataset", help="browse a dataset: gts and the training augmentation",
                       description="Write one picture per image into --out-dir: the image "
                                   "with its ground-truth boxes (one colour per class, crowd "
                                   "regions dashed grey) and, beside it, what the training "
                                   "transform makes of it (resize, random flip) in --epoch of "
                                   "a run with --seed, with the boxes it carries: the exact "
                                   "input reference.train feeds the model. Without data flags: "
                                   "the built-in synthetic dataset.")
    b.add_argument("--data-path", default=None, help="COCO root (annotations/instances_"
                   "{train,val}2017.json, train2017/, val2017/)")
    b.add_argument("--ann", default=None, help="a COCO instances JSON (with --images)")
    b.add_argument("--images", default=None, help="the folder of the images --ann names")
    b.add_argument("--split", choices=("train", "val"), default="train",
                   help="split of --data-path / the synthetic set (default train)")
    b.add_argument("--num", type=int, default=8, help="how many images, from index 0 "
                   "(default 8)")
    b.add_argument("--index", type=int, action="append", default=None, metavar="I",
                   help="show image I of the split (as training indexes it; repeatable)")
    b.add_argument("--epoch", type=int, default=0, help="epoch whose augmentation is drawn")
    b.add_argument("--seed", type=int, default=0, help="the run's --seed (default 0)")
    b.add_argument("--min-size", type=int, default=None, help="as reference.train "
                   "(default: what train picks for this data)")
    b.add_argument("--max-size", type=int, default=None, help="as reference.train")
    b.add_argument("--no-augment", action="store_true", help="only the gts on the file")
    b.add_argument("--out-dir", required=True, help="folder for the pictures (created)")

    c = sub.add_parser("curves", help="loss, learning rate and AP curves of a training run",
                       description="Draw a training run's curves from its log.jsonl (what "
                                   "reference.train writes as curves.png at the end): every "
                                   "loss component and their total per logged step, the "
                                   "learning rate, and COCO bbox AP / AP50 / AP75 per epoch "
                                   "with the AP values written at the points.")
    c.add_argument("--log", required=True, metavar="LOG.jsonl|RUN_DIR",
                   help="a run's log.jsonl, or its --output-dir")
    c.add_argument("--title", default=None, help="figure title (default: model, images, "
                   "steps and epochs from the log's start record)")
    c.add_argument("--out", required=True, help="PNG file to write (its folder must exist)")
    return parser


def _run_anchors(args) -> Image.Image:
    check.choice("flavour", args.flavour, FLAVOURS)
    levels = None if args.level is None else [args.level]
    if args.level is not None and not 0 <= args.level < 5:
        raise ValueError(f"--level: expected 0..4 (P3..P7), got {args.level}")
    if args.panel < 100:
        raise ValueError(f"--panel: expected >= 100 pixels, got {args.panel}")
    return draw_base_anchors(args.flavour, levels, compare=args.compare, panel=args.panel)


def _run_assign(args) -> Image.Image:
    check.choice("flavour", args.flavour, FLAVOURS)
    if args.gt:
        parsed = [parse_box(text) for text in args.gt]
        h, w = _parse_hw(args.canvas)
        picture = Image.new("RGB", (w, h), (250, 250, 250))
        boxes = [b for b, _ in parsed]
        labels = [lab for _, lab in parsed]
        names, source = None, f"blank {h}x{w}"
    else:
        picture, boxes, labels, names = load_synthetic_sample(args.index, args.split)
        h, w = picture.height, picture.width
        source = f"synthetic {args.split} #{args.index}"
    if args.assigner == "maxiou":
        result = assign_retinanet((h, w), boxes, labels, flavour=args.flavour,
                                  allowed_border=args.allowed_border)
        title = f"{source}: {args.flavour} RetinaNet anchors, MaxIoU pos>=0.5 neg<0.4"
    else:
        result = assign_dsl((h, w), boxes, labels, seed=args.seed)
        title = f"{source}: RTMDet points, DSL assigner (random preds, seed {args.seed})"
    picture = draw_assignment(picture, result, scale=args.scale, pad=args.pad,
                              show_ignored=args.show_ignored, class_names=names, title=title)
    print(title)
    for g, count in enumerate(result.positives_per_gt()):
        per_level = ", ".join(f"{LEVEL_NAMES[lv] if lv < 5 else lv}={c}"
                              for lv, c in result.positives_per_level(g).items())
        box = ", ".join(f"{v:.0f}" for v in result.gt_boxes[g].tolist())
        print(f"gt{g} [{box}] label {int(result.gt_labels[g])}: {count} positive ({per_level or 'none'})")
    if not result.is_points:
        print(f"ignored: {int((result.used & (result.gt_inds == -1)).sum())}, "
              f"negative: {int((result.used & (result.gt_inds == 0)).sum())}, "
              f"not used (outside): {int((~result.used).sum())}")
    return picture


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns 0. Bad input exits via ``parser.error`` (status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "dataset":
            written = _run_dataset(args)
            print(f"wrote {len(written)} pictures into {args.out_dir}")
            return 0
        out = _writable_out(args.out)
        if args.command == "curves":
            fig = draw_curves(read_log(args.log), title=args.title)
            fig.savefig(out, format="png")
            width, height = (round(v) for v in fig.get_size_inches() * fig.dpi)
            print(f"wrote {out} ({width}x{height})")
            return 0
        picture = _run_anchors(args) if args.command == "anchors" else _run_assign(args)
        picture.save(out, format="PNG")
    except (ValueError, OSError) as exc:  # DatasetError is a ValueError
        parser.error(str(exc))
    print(f"wrote {out} ({picture.width}x{picture.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
