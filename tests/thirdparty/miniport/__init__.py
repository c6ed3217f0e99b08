"""miniport: a small third-party port of the IoU component, made for the tests of the
suite's tiers (``tests/test_plugin.py``).

Its arithmetic follows SPEC.md (mmdet's ``bbox_overlaps``: ``inter / max(union, eps)``,
GIoU with ``max(enclose, eps)``) and it checks nothing, as many faithful ports do: it
passes the semantics tier of the IoU clauses and fails their validation tier.
"""

import torch

CONFORMANCE = {"name": "miniport", "version": "0.0.1", "flavours": ["mmdet"],
               "deviations": "miniport.deviations"}


def box_area(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1, boxes2, mode="iou", is_aligned=False, eps=1e-6):
    dtype = boxes1.dtype
    b1, b2 = boxes1, boxes2
    if dtype in (torch.float16, torch.bfloat16):  # float32 arithmetic, as SPEC.md asks
        b1, b2 = b1.float(), b2.float()
    if not is_aligned:
        b1, b2 = b1[..., :, None, :], b2[..., None, :, :]
    area1, area2 = box_area(b1), box_area(b2)
    lt = torch.maximum(b1[..., :2], b2[..., :2])
    rb = torch.minimum(b1[..., 2:], b2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1 if mode == "iof" else area1 + area2 - inter
    union = union.clamp(min=eps)
    ious = inter / union
    if mode == "giou":
        e_wh = (torch.maximum(b1[..., 2:], b2[..., 2:])
                - torch.minimum(b1[..., :2], b2[..., :2])).clamp(min=0)
        enclose = (e_wh[..., 0] * e_wh[..., 1]).clamp(min=eps)
        ious = ious - (enclose - union) / enclose
    return ious.to(dtype)
