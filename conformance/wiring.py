"""Whole-detector wiring, recomputed by the suite's own loop oracles (SPEC MOD-16 .. MOD-21).

A detector is a composition of stages the suite already checks one by one: priors ->
assignment -> sampling -> targets -> losses with the flavour's normaliser; eval:
decode -> the flavour's post-processing. The checks here take a built model, read
its raw head outputs (``head_outputs``, and for Faster R-CNN ``box_head_outputs``),
recompute the losses and detections with the loop oracles (``oracles``) in float64 from
the flavour's published settings (SPEC.md), and compare them with what the model's
own ``forward`` returns. So a model that divides RetinaNet's losses by the number of
anchors, trains its RoI head without the gt boxes, picks another flavour's proposal
function or puts RTMDet's points at offset 0.5 fails, whatever its stages pass alone.

Sampling is made deterministic by size: with ``rpn_batch_size`` / ``roi_batch_size``
larger than any image's priors every flavour's sampler keeps all positives and all
negatives (SMP-1), so the composition does not depend on a random stream.

Every ``check_*`` raises AssertionError naming what differs. ``tests/test_wiring.py``
runs them on deliberately mis-wired copies of the reference to show they can fail.
Shape letters: B images, N priors of one image (all levels), n_l of level l, G gts,
C classes, K sampled RoIs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from conformance.checks import assert_same_detections, to_numpy
from oracles import anchors as anchor_oracle
from oracles import assignment as assign_oracle
from oracles import boxes as box_oracle
from oracles import coders as coder_oracle
from oracles import losses as loss_oracle
from oracles import nms as nms_oracle
from oracles import proposals as proposal_oracle

NUM_CLASSES = 3
SIZE_DIVISIBILITY = 32
IMAGE_SIZES = [(64, 96), (48, 64)]  # padded together to (64, 96); own pads (64, 96), (64, 64)
GTS = [([[6.0, 8.0, 40.0, 44.0], [44.0, 10.0, 90.0, 40.0]], [0, 2]),
       ([[12.0, 4.0, 50.0, 30.0]], [1])]
RATIOS = (0.5, 1.0, 2.0)
RETINANET_STRIDES = (8, 16, 32, 64, 128)
RPN_STRIDES = (4, 8, 16, 32, 64)
RTMDET_STRIDES = (8, 16, 32)
ALL = 100_000  # a sampler batch size above every image's prior count: nothing is dropped

# The small configurations' prior settings (SPEC.md, "Detectors"): RetinaNet octave base
# scale 2 with 3 scales per octave; Faster R-CNN anchors 4 * stride; RTMDet points at 0.
RETINANET_OCTAVE_BASE, RETINANET_SCALES = 2.0, 3
RPN_ANCHOR_SCALE = 4.0
# RetinaNet / RPN / RoI assigner thresholds (ASG clauses): (pos, neg, min_pos_iou, low quality)
RETINANET_MATCH = (0.5, 0.4, 0.0, True)
RPN_MATCH = (0.7, 0.3, 0.3, True)
ROI_MATCH = (0.5, 0.5, 0.5, False)
# Loss and decode facts per flavour (LOSS, COD clauses).
RETINANET_BETA = {"mmdet": 0.0, "detectron2": 0.1, "torchvision": 0.0}
RPN_BETA = {"mmdet": 0.0, "detectron2": 0.0, "torchvision": 1.0 / 9}
ROI_BETA = RPN_BETA
ROI_CODER = {"mmdet": dict(stds=(0.1, 0.1, 0.2, 0.2)),
             "detectron2": dict(weights=(10.0, 10.0, 5.0, 5.0)),
             "torchvision": dict(weights=(10.0, 10.0, 5.0, 5.0))}


# --------------------------------------------------------------------------- inputs
def images_and_targets(device, seed: int = 0):
    """Two seeded images of the sizes above and their gts (xyxy pixels, labels)."""
    g = np.random.default_rng(seed)
    images = [torch.tensor(g.standard_normal((3, h, w)), dtype=torch.float32, device=device)
              for h, w in IMAGE_SIZES]
    targets = [{"boxes": torch.tensor(b, dtype=torch.float32, device=device),
                "labels": torch.tensor(lab, dtype=torch.int64, device=device)} for b, lab in GTS]
    return images, targets


def padded(impl, images) -> torch.Tensor:
    """The (B, 3, H, W) batch every detector builds (MOD-1, size divisibility 32)."""
    return impl.get("ImageList").from_tensors(list(images), SIZE_DIVISIBILITY).tensor


def _pad_of(size) -> tuple[int, int]:
    return tuple(int(math.ceil(v / SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY) for v in size)


def _flat(maps, k: int) -> np.ndarray:
    """Per level (B, A*k, H, W) -> (B, sum H*W*A, k), location-major, prior-minor."""
    out = []
    for m in maps:
        a = to_numpy(m).astype(np.float64)
        b, ak, h, w = a.shape
        out.append(a.reshape(b, ak // k, k, h, w).transpose(0, 3, 4, 1, 2).reshape(b, -1, k))
    return np.concatenate(out, axis=1)


def _levels(maps) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in m.shape[-2:]) for m in maps]


# --------------------------------------------------------------------------- priors
def anchors(flavour: str, featmaps, padded_size, strides, sizes_of) -> list[np.ndarray]:
    """Per level (n_l, 4) anchors of ``flavour``: mmdet base anchors (ratio outer),
    detectron2 cell anchors (size outer), torchvision rounded base anchors on
    strides padded_size // featmap; ``sizes_of(stride)`` gives a level's sizes."""
    out = []
    for stride, fm in zip(strides, featmaps):
        sizes = sizes_of(stride)
        if flavour == "mmdet":
            base = anchor_oracle.mmdet_base_anchors(stride, [s / stride for s in sizes], RATIOS)
            stride_wh = (stride, stride)
        elif flavour == "detectron2":
            base = anchor_oracle.detectron2_cell_anchors(sizes, RATIOS)
            stride_wh = (stride, stride)
        else:
            base = anchor_oracle.torchvision_base_anchors(sizes, RATIOS)
            stride_wh = anchor_oracle.torchvision_strides(padded_size, fm)
        out.append(anchor_oracle.grid_anchors(base, fm, stride_wh))
    return out


def anchor_valid(flavour: str, featmaps, strides, image_size, per_location: int) -> np.ndarray:
    """(N,) bool: mmdet's valid flags for the image's own pad shape; all True otherwise."""
    flags = []
    for stride, fm in zip(strides, featmaps):
        if flavour == "mmdet":
            flags.append(anchor_oracle.valid_flags(fm, _pad_of(image_size), (stride, stride),
                                                   per_location))
        else:
            flags.append(np.ones(fm[0] * fm[1] * per_location, dtype=bool))
    return np.concatenate(flags)


def retinanet_sizes(flavour: str):
    def sizes_of(stride):
        sizes = [stride * RETINANET_OCTAVE_BASE * 2 ** (i / RETINANET_SCALES)
                 for i in range(RETINANET_SCALES)]
        return [float(int(s)) for s in sizes] if flavour == "torchvision" else sizes
    return sizes_of


def rpn_sizes(stride) -> list[float]:
    return [RPN_ANCHOR_SCALE * stride]


# --------------------------------------------------------------------------- assignment
def assign(flavour: str, priors: np.ndarray, gts: np.ndarray, setting) -> np.ndarray:
    """(N,) mmdet-encoded gt_inds (k + 1 positive, 0 negative, -1 ignored) by the
    flavour's matcher: MaxIoUAssigner, detectron2 Matcher or torchvision Matcher."""
    pos, neg, min_pos, low_quality = setting
    n = len(priors)
    if len(gts) == 0:
        return np.zeros(n, dtype=np.int64)
    if flavour == "mmdet":
        overlaps = assign_oracle.iou_matrix(gts, priors)
        gt_inds, _, _ = assign_oracle.max_iou_assign(overlaps, pos, neg, min_pos,
                                                     match_low_quality=low_quality)
        return gt_inds
    if flavour == "detectron2":
        quality = box_oracle.pairwise_iou(gts, priors)
        thresholds, labels = ([neg, pos], [0, -1, 1]) if neg < pos else ([pos], [0, 1])
        matches, state = assign_oracle.detectron2_match(quality, thresholds, labels, low_quality)
        return np.where(state == 1, matches + 1, np.where(state == 0, 0, -1))
    quality = box_oracle.box_iou_torchvision(gts, priors)
    idx = assign_oracle.torchvision_match(quality, pos, neg, low_quality)
    return np.where(idx >= 0, idx + 1, np.where(idx == -1, 0, -1))


def _encode(flavour: str, priors, gts, coder=None) -> np.ndarray:
    coder = coder or {}
    return coder_oracle.delta_encode(priors, gts, stds=coder.get("stds", (1, 1, 1, 1)),
                                     weights=coder.get("weights", (1, 1, 1, 1)))


def _decode(flavour: str, priors, deltas, coder=None, max_shape=None) -> np.ndarray:
    """mmdet clamps dw, dh on both sides; detectron2 and torchvision from above only."""
    coder = coder or {}
    return coder_oracle.delta_decode(priors, deltas, stds=coder.get("stds", (1, 1, 1, 1)),
                                     weights=coder.get("weights", (1, 1, 1, 1)),
                                     clamp_below=flavour == "mmdet", max_shape=max_shape)


def _clip(boxes: np.ndarray, size) -> np.ndarray:
    h, w = size
    out = np.array(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out


def _compare_losses(got: dict, expected: dict, what: str, rtol=1e-4, atol=1e-6) -> None:
    for key, value in expected.items():
        assert key in got, f"{what}: the model returns no {key!r} (got {sorted(got)})"
        g = float(got[key].detach().cpu())
        assert abs(g - value) <= atol + rtol * abs(value), (
            f"{what}: {key} = {g:.7g}, the composition of the stages gives {value:.7g}")


def _dense_detections(scores_levels, decode_levels, size, score_thresh, topk, nms_iou, max_det,
                      min_bbox_size=None):
    """Per level: sigmoid scores prior-major, > thr, top-k; decode; with ``min_bbox_size``
    set (mmdet 3.3, MOD-27) keep only w > s and h > s; batched NMS; max_det."""
    boxes, scores, labels = [], [], []
    for s, decode in zip(scores_levels, decode_levels):
        flat = s.reshape(-1)  # (n_l * C,)
        c = s.shape[1]
        cand = [i for i in range(len(flat)) if flat[i] > score_thresh]
        cand = sorted(cand, key=lambda i: (-flat[i], i))[:topk]
        rows = [i // c for i in cand]
        decoded = np.reshape(decode(rows), (-1, 4))
        if min_bbox_size is not None:
            big = [j for j, b in enumerate(decoded)
                   if b[2] - b[0] > min_bbox_size and b[3] - b[1] > min_bbox_size]
            decoded, cand = decoded[big], [cand[j] for j in big]
        boxes += list(decoded)
        scores += [flat[i] for i in cand]
        labels += [i % c for i in cand]
    keep = nms_oracle.batched_nms(np.reshape(boxes, (-1, 4)), scores, labels, nms_iou)[:max_det]
    return {"boxes": np.reshape([boxes[k] for k in keep], (-1, 4)),
            "scores": np.array([scores[k] for k in keep]),
            "labels": np.array([labels[k] for k in keep], dtype=np.int64)}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# =========================================================================== RetinaNet
def retinanet_expected_losses(flavour: str, cls_maps, box_maps, padded_size, targets) -> dict:
    """MOD-16: anchors -> matcher -> focal + (smooth) L1 sums -> the flavour's normaliser."""
    featmaps = _levels(cls_maps)
    anc = np.concatenate(anchors(flavour, featmaps, padded_size, RETINANET_STRIDES,
                                 retinanet_sizes(flavour)))  # (N, 4)
    cls, box = _flat(cls_maps, NUM_CLASSES), _flat(box_maps, 4)  # (B, N, C), (B, N, 4)
    cls_sums, box_sums, num_pos = [], [], []
    for i, (size, t) in enumerate(zip(IMAGE_SIZES, targets)):
        gts, labels = to_numpy(t["boxes"]).astype(np.float64), to_numpy(t["labels"])
        valid = anchor_valid(flavour, featmaps, RETINANET_STRIDES, size, len(RATIOS) * RETINANET_SCALES)
        gt_inds = np.full(len(anc), -1, dtype=np.int64)
        gt_inds[valid] = assign(flavour, anc[valid], gts, RETINANET_MATCH)
        used, pos = gt_inds >= 0, gt_inds > 0
        target = np.zeros((len(anc), NUM_CLASSES))
        target[np.flatnonzero(pos), labels[gt_inds[pos] - 1]] = 1.0
        cls_sums.append(loss_oracle.focal_elementwise(cls[i][used], target[used]).sum())
        deltas = _encode(flavour, anc[pos], gts[gt_inds[pos] - 1])
        box_sums.append(loss_oracle.smooth_l1_elementwise(box[i][pos], deltas,
                                                          RETINANET_BETA[flavour]).sum())
        num_pos.append(int(pos.sum()))
    if flavour == "mmdet":  # LOSS-20: sum / sum_i max(pos_i, 1)
        den = sum(max(p, 1) for p in num_pos)
        return {"loss_cls": sum(cls_sums) / den, "loss_box": sum(box_sums) / den}
    if flavour == "detectron2":  # LOSS-23: first update of the EMA (0.9, start 100)
        den = 0.9 * 100.0 + 0.1 * max(sum(num_pos), 1)
        return {"loss_cls": sum(cls_sums) / den, "loss_box": sum(box_sums) / den}
    den = [max(1, p) for p in num_pos]  # LOSS-24: mean_i(sum_i / max(1, pos_i))
    return {"loss_cls": float(np.mean([c / d for c, d in zip(cls_sums, den)])),
            "loss_box": float(np.mean([b / d for b, d in zip(box_sums, den)]))}


def retinanet_expected_detections(flavour: str, cls_maps, box_maps, padded_size, *,
                                  score_thresh, topk, nms_iou, max_det) -> list[dict]:
    """MOD-17: per level top-k, decode with the flavour's coder, clip, batched NMS."""
    featmaps = _levels(cls_maps)
    anc = anchors(flavour, featmaps, padded_size, RETINANET_STRIDES, retinanet_sizes(flavour))
    out = []
    for i, size in enumerate(IMAGE_SIZES):
        scores = [_sigmoid(_flat([m[i:i + 1]], NUM_CLASSES)[0]) for m in cls_maps]
        deltas = [_flat([m[i:i + 1]], 4)[0] for m in box_maps]
        decoders = [(lambda rows, a=a, d=d: _clip(_decode(flavour, a[rows], d[rows]), size))
                    for a, d in zip(anc, deltas)]
        out.append(_dense_detections(scores, decoders, size, score_thresh, topk, nms_iou, max_det))
    return out


def check_retinanet(model, impl, flavour: str, device) -> None:
    """Training losses and eval detections of a small RetinaNet of ``flavour`` equal the
    oracle composition on its own head outputs. The model must be freshly built with
    ``score_thresh=0.0, topk_candidates=50`` (see the test)."""
    images, targets = images_and_targets(device)
    batch = padded(impl, images)
    padded_size = tuple(batch.shape[-2:])
    model.train()
    with torch.no_grad():
        cls_maps, box_maps = model.head_outputs(batch)
    expected = retinanet_expected_losses(flavour, cls_maps, box_maps, padded_size, targets)
    _compare_losses(model(images, targets), expected, f"retinanet ({flavour}) training losses")
    model.eval()
    with torch.no_grad():
        cls_maps, box_maps = model.head_outputs(batch)
        got = model(images)
    expected = retinanet_expected_detections(flavour, cls_maps, box_maps, padded_size,
                                             score_thresh=0.0, topk=50, nms_iou=0.5,
                                             max_det=300 if flavour == "torchvision" else 100)
    for g, e in zip(got, expected):
        assert_same_detections(g, e, what=f"retinanet ({flavour}) eval detections")


# =========================================================================== Faster R-CNN
RPN_TRAIN = dict(pre=200, post=100)  # rpn_pre/post_nms_topk_train of the check's model
RPN_TEST = dict(pre=150, post=80)  # rpn_pre/post_nms_topk_test
FASTER_RCNN_OVERRIDES = dict(rpn_batch_size=ALL, roi_batch_size=ALL, score_thresh=0.0,
                             rpn_pre_nms_topk_train=RPN_TRAIN["pre"],
                             rpn_post_nms_topk_train=RPN_TRAIN["post"],
                             rpn_pre_nms_topk_test=RPN_TEST["pre"],
                             rpn_post_nms_topk_test=RPN_TEST["post"], max_detections=1000)


def rpn_expected(flavour: str, obj_maps, delta_maps, padded_size, targets, training: bool):
    """RPN losses (MOD-18) and per-image proposals of the flavour's proposal function
    with its own settings (MOD-19): mmdet ``mmdet_rpn_proposals`` on sigmoid scores
    (min_bbox_size 0), detectron2 ``find_top_rpn_proposals`` on logits (min size 0),
    torchvision the same with min size 1e-3."""
    featmaps = _levels(obj_maps)
    levels = anchors(flavour, featmaps, padded_size, RPN_STRIDES, rpn_sizes)
    anc = np.concatenate(levels)
    logits, deltas = _flat(obj_maps, 1)[..., 0], _flat(delta_maps, 4)  # (B, N), (B, N, 4)
    counts = [len(a) for a in levels]
    setting = RPN_TRAIN if training else RPN_TEST
    proposals, cls_sums, box_sums, num_pos, num_neg = [], [], [], [], []
    for i, (size, t) in enumerate(zip(IMAGE_SIZES, targets)):
        lg, dl = np.split(logits[i], np.cumsum(counts)[:-1]), np.split(deltas[i], np.cumsum(counts)[:-1])
        if flavour == "mmdet":
            boxes = proposal_oracle.mmdet_rpn_proposals(
                [_sigmoid(s) for s in lg], dl, levels, size, setting["pre"], 0.7, 0.0,
                setting["post"])[0]
        else:
            decoded = [_decode(flavour, a, d) for a, d in zip(levels, dl)]
            boxes = proposal_oracle.find_top_rpn_proposals(
                decoded, lg, size, 0.7, setting["pre"], setting["post"],
                1e-3 if flavour == "torchvision" else 0.0, training)[0]
        proposals.append(boxes)
        if t is None:
            continue
        gts = to_numpy(t["boxes"]).astype(np.float64)
        valid = anchor_valid(flavour, featmaps, RPN_STRIDES, size, len(RATIOS))
        gt_inds = np.full(len(anc), -1, dtype=np.int64)
        gt_inds[valid] = assign(flavour, anc[valid], gts, RPN_MATCH)
        pos, neg = gt_inds > 0, gt_inds == 0  # everything is sampled (ALL)
        sampled = pos | neg
        cls_sums.append(loss_oracle.bce_elementwise(logits[i][sampled], pos[sampled] * 1.0).sum())
        box_sums.append(loss_oracle.smooth_l1_elementwise(
            deltas[i][pos], _encode(flavour, anc[pos], gts[gt_inds[pos] - 1]), RPN_BETA[flavour]).sum())
        num_pos.append(int(pos.sum()))
        num_neg.append(int(neg.sum()))
    losses = None
    if targets[0] is not None:
        if flavour == "mmdet":  # sampling heads: sum_i max(pos_i, 1) + max(neg_i, 1)
            den = sum(max(p, 1) for p in num_pos) + sum(max(n, 1) for n in num_neg)
        elif flavour == "detectron2":  # LOSS-22: 1 / (batch_size_per_image * B)
            den = ALL * len(targets)
        else:  # torchvision: mean over the sampled anchors
            den = sum(num_pos) + sum(num_neg)
        losses = {"loss_rpn_cls": sum(cls_sums) / den, "loss_rpn_box": sum(box_sums) / den}
    return losses, proposals


def roi_sample(flavour: str, proposals: np.ndarray, gts: np.ndarray, labels: np.ndarray):
    """MOD-20: the RoIs the box head trains on and their targets. detectron2 and
    torchvision append the gts to the proposals before matching; mmdet matches the
    proposals and prepends the gts, each assigned to itself. Everything is sampled.
    Returns rois (K, 4), class labels (K,) (C = background), deltas (K, 4), pos (K,)."""
    if flavour == "mmdet":
        gt_inds = np.concatenate([np.arange(1, len(gts) + 1),
                                  assign(flavour, proposals, gts, ROI_MATCH)])
        priors = np.concatenate([gts, proposals]).reshape(-1, 4)
    else:
        priors = np.concatenate([proposals, gts]).reshape(-1, 4)
        gt_inds = assign(flavour, priors, gts, ROI_MATCH)
    keep = gt_inds >= 0
    priors, gt_inds = priors[keep], gt_inds[keep]
    pos = gt_inds > 0
    cls = np.where(pos, labels[np.maximum(gt_inds, 1) - 1], NUM_CLASSES)
    deltas = np.zeros((len(priors), 4))
    deltas[pos] = _encode(flavour, priors[pos], gts[gt_inds[pos] - 1], ROI_CODER[flavour])
    return priors, cls, deltas, pos


def _logit_column(flavour: str, labels: np.ndarray) -> np.ndarray:
    """torchvision: background in column 0, class c in c + 1; else background last."""
    return (labels + 1) % (NUM_CLASSES + 1) if flavour == "torchvision" else labels


def roi_expected_losses(flavour: str, model, batch, proposals, targets) -> dict:
    per_image = [roi_sample(flavour, p, to_numpy(t["boxes"]).astype(np.float64), to_numpy(t["labels"]))
                 for p, t in zip(proposals, targets)]
    rois = np.concatenate([np.concatenate([np.full((len(r), 1), i), r], 1)
                           for i, (r, _, _, _) in enumerate(per_image)])  # (K, 5)
    with torch.no_grad():
        logits, deltas = model.box_head_outputs(batch, torch.tensor(rois, dtype=batch.dtype,
                                                                    device=batch.device))
    logits = to_numpy(logits).astype(np.float64)
    deltas = to_numpy(deltas).astype(np.float64).reshape(len(rois), -1, 4)
    labels = np.concatenate([c for _, c, _, _ in per_image])
    pos = np.concatenate([p for _, _, _, p in per_image])
    targets_d = np.concatenate([d for _, _, d, _ in per_image])
    cols = _logit_column(flavour, labels)
    pred = deltas[np.flatnonzero(pos), cols[pos] if deltas.shape[1] > 1 else 0]
    box = loss_oracle.smooth_l1_elementwise(pred, targets_d[pos], ROI_BETA[flavour]).sum()
    return {"loss_cls": float(loss_oracle.cross_entropy_rows(logits, cols).mean()),
            "loss_box": box / max(1, len(rois))}


def faster_rcnn_expected_detections(flavour: str, logits, deltas, proposals) -> list[dict]:
    """MOD-21: softmax, decode every class's box, then mmdet ``multiclass_nms`` on
    clipped boxes, or ``fast_rcnn_inference`` (torchvision: boxes narrower or lower
    than 1e-2 after clipping go first). Score > 0.0 here, NMS 0.5, cap 1000."""
    logits = to_numpy(logits).astype(np.float64)
    deltas = to_numpy(deltas).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    if flavour == "torchvision":  # to background last, drop the background's box
        probs = np.concatenate([probs[:, 1:], probs[:, :1]], 1)
        deltas = deltas[:, 4:]
    out, start = [], 0
    for size, props in zip(IMAGE_SIZES, proposals):
        rows = slice(start, start + len(props))
        start += len(props)
        boxes = _decode(flavour, props, deltas[rows], ROI_CODER[flavour])  # (k, 4 * C)
        scores = probs[rows].copy()
        if flavour == "mmdet":
            boxes = _clip(boxes, size).reshape(len(props), -1)
            b, s, lab, _ = nms_oracle.multiclass_nms(boxes, scores, 0.0, 0.5, 1000)
        else:
            if flavour == "torchvision":
                clipped = _clip(boxes, size).reshape(len(props), -1, 4)
                small = ((clipped[..., 2] - clipped[..., 0]) < 1e-2) | \
                    ((clipped[..., 3] - clipped[..., 1]) < 1e-2)  # (k, C)
                scores[:, :NUM_CLASSES][small] = 0.0  # never above the 0.0 threshold
            b, s, lab, _ = nms_oracle.fast_rcnn_inference(boxes, scores, size, 0.0, 0.5, 1000)
        out.append({"boxes": b, "scores": s, "labels": lab})
    return out


def check_faster_rcnn(model, impl, flavour: str, device) -> None:
    """RPN and RoI training losses, eval proposals and eval detections of a small
    Faster R-CNN of ``flavour`` built with ``FASTER_RCNN_OVERRIDES`` equal the oracle
    composition on its own RPN and box-head outputs."""
    images, targets = images_and_targets(device)
    batch = padded(impl, images)
    padded_size = tuple(batch.shape[-2:])
    model.train()
    with torch.no_grad():
        obj, deltas = model.head_outputs(batch)
    rpn_losses, proposals = rpn_expected(flavour, obj, deltas, padded_size, targets, training=True)
    expected = dict(rpn_losses)
    expected.update(roi_expected_losses(flavour, model, batch, proposals, targets))
    _compare_losses(model(images, targets), expected, f"faster_rcnn ({flavour}) training losses")
    model.eval()
    with torch.no_grad():
        obj, deltas = model.head_outputs(batch)
        _, proposals = rpn_expected(flavour, obj, deltas, padded_size, [None, None], training=False)
        got_props, _ = model.proposals_and_roi_features(images)
        for i, (g, e) in enumerate(zip(got_props, proposals)):
            g = to_numpy(g).astype(np.float64)
            assert g.shape == e.shape and np.abs(g - e).max(initial=0) <= 1e-3, (
                f"faster_rcnn ({flavour}) eval proposals of image {i}: {g.shape[0]} boxes, the "
                f"flavour's proposal function gives {e.shape[0]}"
                + ("" if g.shape != e.shape else f" (max difference {np.abs(g - e).max():.3g})"))
        rois = torch.cat([torch.cat([torch.full_like(p[:, :1], i), p], 1)
                          for i, p in enumerate(got_props)])
        logits, box_deltas = model.box_head_outputs(batch, rois)
        got = model(images)
    expected = faster_rcnn_expected_detections(flavour, logits, box_deltas, proposals)
    for g, e in zip(got, expected):
        assert_same_detections(g, e, what=f"faster_rcnn ({flavour}) eval detections")


# =========================================================================== RTMDet
PERTURBATION = 0.05
def rtmdet_points(featmaps) -> list[np.ndarray]:
    """Per level (n_l, 4) points (x, y, stride, stride) at offset 0 (mmdet's configs)."""
    return [anchor_oracle.grid_points(fm, (s, s), 0.0, with_stride=True)
            for s, fm in zip(RTMDET_STRIDES, featmaps)]


def rtmdet_expected_losses(cls_maps, dist_maps, targets) -> dict:
    """MOD-16: DSL assignment on the detached predictions -> QFL over valid priors and
    GIoU (weight 2) over positives weighted by the IoU metric -> rtmdet_avg_factor."""
    featmaps = _levels(cls_maps)
    points = np.concatenate(rtmdet_points(featmaps))  # (N, 4)
    cls, dist = _flat(cls_maps, NUM_CLASSES), _flat(dist_maps, 4)
    cls_sum, box_sum, metric_sum, pos_metric_sum = 0.0, 0.0, 0.0, 0.0
    for i, (size, t) in enumerate(zip(IMAGE_SIZES, targets)):
        gts, labels = to_numpy(t["boxes"]).astype(np.float64), to_numpy(t["labels"])
        valid = anchor_valid("mmdet", featmaps, RTMDET_STRIDES, size, 1)
        decoded = coder_oracle.distance_decode(points, dist[i])  # (N, 4), not clipped
        gt_inds, overlaps, assigned = assign_oracle.dsl_assign(
            cls[i][valid], decoded[valid], points[valid], gts, labels)
        pos = gt_inds > 0
        metrics = np.where(pos, overlaps, 0.0)
        cls_labels = np.where(pos, assigned, NUM_CLASSES)
        cls_sum += loss_oracle.qfl_rows(cls[i][valid], cls_labels, metrics).sum()
        if pos.any():
            giou = loss_oracle.giou_loss_rows(decoded[valid][pos], gts[gt_inds[pos] - 1])
            box_sum += float((giou * metrics[pos]).sum())
        metric_sum += metrics.sum()
        pos_metric_sum += metrics[pos].sum()
    return {"loss_cls": cls_sum / max(metric_sum, 1.0),
            "loss_box": 2.0 * box_sum / max(pos_metric_sum, 1.0)}


def rtmdet_expected_detections(cls_maps, dist_maps, *, score_thresh, topk, nms_iou, max_det):
    """MOD-17: boxes = points -+ distances clipped to the image; boxes of width or height
    <= 0 dropped (mmdet 3.3 ``test_cfg.min_bbox_size=0``, MOD-27); dense top-k and NMS."""
    pts = rtmdet_points(_levels(cls_maps))
    out = []
    for i, size in enumerate(IMAGE_SIZES):
        scores = [_sigmoid(_flat([m[i:i + 1]], NUM_CLASSES)[0]) for m in cls_maps]
        dists = [_flat([m[i:i + 1]], 4)[0] for m in dist_maps]
        decoders = [(lambda rows, p=p, d=d: coder_oracle.distance_decode(p[rows], d[rows], size))
                    for p, d in zip(pts, dists)]
        out.append(_dense_detections(scores, decoders, size, score_thresh, topk, nms_iou, max_det,
                                     min_bbox_size=0.0))
    return out


def check_rtmdet(model, impl, device) -> None:
    """Training losses and eval detections of a small RTMDet built with
    ``score_thresh=0.0`` equal the oracle composition on its own head outputs."""
    images, targets = images_and_targets(device)
    batch = padded(impl, images)
    # RTMDet's initialisation makes every prior's outputs equal to about 1e-6 (std 0.01
    # convs on near-zero features), so detections would tie everywhere: perturb every
    # parameter by seeded noise first (any weights serve a wiring check).
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.device, p.dtype) * PERTURBATION)
    model.train()
    with torch.no_grad():
        cls_maps, dist_maps = model.head_outputs(batch)
    _compare_losses(model(images, targets), rtmdet_expected_losses(cls_maps, dist_maps, targets),
                    "rtmdet training losses")
    model.eval()
    with torch.no_grad():
        cls_maps, dist_maps = model.head_outputs(batch)
        got = model(images)
    expected = rtmdet_expected_detections(cls_maps, dist_maps, score_thresh=0.0, topk=30000,
                                          nms_iou=0.65, max_det=300)
    for g, e in zip(got, expected):
        assert_same_detections(g, e, what="rtmdet eval detections")
