"""Heads: pyramid features in, raw per-location predictions out.

Only the layers live here; what the predictions mean (anchors, targets, losses,
decoding) is wired in ``reference/detectors/``. Every head returns plain tensors
in the layout upstream uses, so shapes can be checked against the seeds:

* ``RetinaHead``: per level, cls (B, A * C, H, W) logits and box (B, A * 4, H, W)
  deltas; the conv towers are shared across levels.
* ``RPNHead``: per level, objectness (B, A, H, W) and deltas (B, A * 4, H, W).
* ``RoIBoxHead``: pooled RoI features (K, C, 7, 7) -> class logits (K, C + 1) and
  box deltas (K, 4 * C) (mmdet/detectron2: background is the LAST column and has
  no box) or (K, 4 * (C + 1)) (torchvision: background is column 0 and has one).
* ``RTMDetSepBNHead``: per level, cls (B, C, H, W) logits and distances
  (B, 4, H, W) already multiplied by the level's stride (exp first when
  ``exp_on_reg``); convs shared across levels, BN and prediction layers per level.

Channel order inside ``A * K`` is anchor-major: channel ``a * K + k`` is anchor
``a`` (the anchor generator's order within one location), component ``k``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reference.backbones import ConvBNAct

__all__ = [
    "RetinaHead",
    "RPNHead",
    "RoIBoxHead",
    "RTMDetSepBNHead",
    "prior_prob_bias",
    "flatten_level_outputs",
]


def prior_prob_bias(prior_prob: float) -> float:
    """Logit bias so that sigmoid(bias) = prior_prob (RetinaNet's 0.01 -> -4.595)."""
    if not 0.0 < prior_prob < 1.0:
        raise ValueError(f"prior_prob={prior_prob!r}: expected a probability in (0, 1)")
    return -math.log((1.0 - prior_prob) / prior_prob)


def flatten_level_outputs(maps: list[torch.Tensor], k: int) -> torch.Tensor:
    """Per-level (B, A * K, H, W) maps -> one (B, sum_l H_l * W_l * A, K) tensor.

    Rows run level by level, then row-major over locations (H then W), then over
    the A anchors of a location: the order every anchor generator here uses.
    (detectron2 ``permute_to_N_HWA_K``, torchvision's head ``view/permute``.)
    """
    flat = []
    for m in maps:
        n, ak, h, w = m.shape
        a = ak // k
        flat.append(m.view(n, a, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * a, k))
    return torch.cat(flat, dim=1)


def _conv_tower(channels: int, feat_channels: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [nn.Conv2d(channels if i == 0 else feat_channels, feat_channels, 3, padding=1),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class RetinaHead(nn.Module):
    """RetinaNet's head: two conv towers shared by all pyramid levels.

    Args:
        in_channels: width of the pyramid maps.
        num_classes: C foreground classes (sigmoid classification, no background).
        num_anchors: A anchors per location (9 upstream).
        feat_channels: width of the tower convs (256 upstream).
        stacked_convs: convs per tower (4 upstream), each followed by ReLU.
        prior_prob: initial foreground probability of every logit (0.01).

    All convs start from N(0, 0.01) with zero bias, except the classification
    output's bias, ``prior_prob_bias(prior_prob)``, so the first focal losses are
    not swamped by the many easy negatives.

    ``forward(feats)``: list of (B, in_channels, H_l, W_l) -> (cls, box): lists of
    (B, A * C, H_l, W_l) logits and (B, A * 4, H_l, W_l) deltas.
    """

    def __init__(self, in_channels: int, num_classes: int, num_anchors: int = 9,
                 feat_channels: int = 256, stacked_convs: int = 4,
                 prior_prob: float = 0.01) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.cls_convs = _conv_tower(in_channels, feat_channels, stacked_convs)
        self.reg_convs = _conv_tower(in_channels, feat_channels, stacked_convs)
        self.cls_out = nn.Conv2d(feat_channels, num_anchors * num_classes, 3, padding=1)
        self.reg_out = nn.Conv2d(feat_channels, num_anchors * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_out.bias, prior_prob_bias(prior_prob))

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cls = [self.cls_out(self.cls_convs(x)) for x in feats]  # (B, A * C, H_l, W_l)
        box = [self.reg_out(self.reg_convs(x)) for x in feats]  # (B, A * 4, H_l, W_l)
        return cls, box


class RPNHead(nn.Module):
    """Region proposal head: one shared 3x3 conv + ReLU, then two 1x1 outputs.

    ``forward(feats)``: list of (B, in_channels, H_l, W_l) -> (objectness, deltas):
    lists of (B, A, H_l, W_l) logits and (B, A * 4, H_l, W_l) deltas.
    Weights start from N(0, 0.01), biases 0 (all three upstreams).
    """

    def __init__(self, in_channels: int, num_anchors: int = 3, feat_channels: int | None = None) -> None:
        super().__init__()
        feat_channels = in_channels if feat_channels is None else feat_channels
        self.conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.objectness = nn.Conv2d(feat_channels, num_anchors, 1)
        self.deltas = nn.Conv2d(feat_channels, num_anchors * 4, 1)
        for m in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        hidden = [F.relu(self.conv(x)) for x in feats]
        return [self.objectness(h) for h in hidden], [self.deltas(h) for h in hidden]


class RoIBoxHead(nn.Module):
    """Second-stage box head: flatten, fully connected layers, class and box outputs.

    Args:
        in_channels: channels of the pooled features.
        pooled_size: S of the (S, S) pooled features (7).
        num_classes: C foreground classes.
        fc_dim: width of the hidden layers (1024).
        num_fcs: hidden fully connected layers, each followed by ReLU (2).
        background_first: False (mmdet, detectron2): logits (K, C + 1) with
            background at column C and class-specific deltas (K, 4 * C);
            True (torchvision): background at column 0, foreground class c at
            column c + 1, deltas (K, 4 * (C + 1)) including a background box.
        class_agnostic: one box per RoI, deltas (K, 4).

    ``forward(pooled)``: (K, in_channels, S, S) -> (logits, deltas).
    Init (mmdet/detectron2): class output N(0, 0.01), box output N(0, 0.001),
    zero biases; hidden layers keep PyTorch's default init.
    """

    def __init__(self, in_channels: int, num_classes: int, pooled_size: int = 7,
                 fc_dim: int = 1024, num_fcs: int = 2, background_first: bool = False,
                 class_agnostic: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.background_first = background_first
        self.class_agnostic = class_agnostic
        dims = [in_channels * pooled_size * pooled_size] + [fc_dim] * num_fcs
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.cls_score = nn.Linear(dims[-1], num_classes + 1)
        boxes_per_roi = 1 if class_agnostic else num_classes + int(background_first)
        self.bbox_pred = nn.Linear(dims[-1], 4 * boxes_per_roi)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pooled.flatten(1)  # (K, in_channels * S * S)
        for fc in self.fcs:
            x = F.relu(fc(x))  # (K, fc_dim)
        return self.cls_score(x), self.bbox_pred(x)


class RTMDetSepBNHead(nn.Module):
    """RTMDet's head: conv towers shared across levels, BN and outputs per level.

    Args:
        in_channels, feat_channels: pyramid width and tower width.
        num_classes: C (sigmoid classification).
        strides: one per level (8, 16, 32); distances are multiplied by them.
        stacked_convs: ConvBNAct layers per tower (2).
        share_conv: the convs of every level are the level-0 convs (BN stays per
            level); parameters() then counts each conv once.
        exp_on_reg: distances = exp(conv) * stride (RTMDet m/l/x) instead of
            conv * stride (tiny, s).
        with_objectness: add a 1-channel objectness output on the reg tower and
            fuse it into the logits as logit(sqrt(sigmoid(cls) * sigmoid(obj))).
        pred_kernel_size: kernel of the output convs (1).

    ``forward(feats)`` -> (cls, dist): lists of (B, C, H_l, W_l) logits and
    (B, 4, H_l, W_l) (left, top, right, bottom) distances in pixels.
    """

    def __init__(self, in_channels: int, num_classes: int, feat_channels: int = 256,
                 strides: tuple[int, ...] = (8, 16, 32), stacked_convs: int = 2,
                 share_conv: bool = True, exp_on_reg: bool = False,
                 with_objectness: bool = False, pred_kernel_size: int = 1,
                 prior_prob: float = 0.01) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.exp_on_reg = exp_on_reg
        self.with_objectness = with_objectness
        pad = pred_kernel_size // 2

        def tower() -> nn.Sequential:
            return nn.Sequential(*[ConvBNAct(in_channels if i == 0 else feat_channels,
                                             feat_channels, 3) for i in range(stacked_convs)])

        self.cls_convs = nn.ModuleList(tower() for _ in self.strides)
        self.reg_convs = nn.ModuleList(tower() for _ in self.strides)
        self.cls_out = nn.ModuleList(nn.Conv2d(feat_channels, num_classes, pred_kernel_size,
                                               padding=pad) for _ in self.strides)
        self.reg_out = nn.ModuleList(nn.Conv2d(feat_channels, 4, pred_kernel_size, padding=pad)
                                     for _ in self.strides)
        self.obj_out = nn.ModuleList(nn.Conv2d(feat_channels, 1, pred_kernel_size, padding=pad)
                                     for _ in self.strides) if with_objectness else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for conv in self.cls_out:
            nn.init.constant_(conv.bias, prior_prob_bias(prior_prob))
        if share_conv:
            for level in range(1, len(self.strides)):
                for i in range(stacked_convs):
                    self.cls_convs[level][i].conv = self.cls_convs[0][i].conv
                    self.reg_convs[level][i].conv = self.reg_convs[0][i].conv

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(feats) != len(self.strides):
            raise ValueError(f"feats: got {len(feats)} maps, expected {len(self.strides)}")
        cls_maps, dist_maps = [], []
        for level, (x, stride) in enumerate(zip(feats, self.strides)):
            cls_feat = self.cls_convs[level](x)
            reg_feat = self.reg_convs[level](x)
            cls = self.cls_out[level](cls_feat)  # (B, C, H_l, W_l)
            if self.obj_out is not None:
                obj = self.obj_out[level](reg_feat)  # (B, 1, H_l, W_l)
                p = torch.sqrt(torch.sigmoid(cls) * torch.sigmoid(obj))
                cls = torch.logit(p, eps=1e-5)
            raw = self.reg_out[level](reg_feat)  # (B, 4, H_l, W_l)
            dist = (raw.exp() if self.exp_on_reg else raw) * stride
            cls_maps.append(cls)
            dist_maps.append(dist)
        return cls_maps, dist_maps
