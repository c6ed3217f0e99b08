"""Necks: backbone feature maps in, a pyramid of equally wide maps out.

* ``FPN`` (feature pyramid network). From backbone maps C_{s}..C_{e} it makes
  P_{s}..P_{e} (1x1 lateral conv, top-down nearest upsampling and add, 3x3 output
  conv), then extra coarser levels until ``num_outs`` maps exist. The upstream
  variants differ only in where the extra levels come from, which is data here:

  ======================  ===============  ==========================================
  model / flavour         extra_source     extra levels
  ======================  ===============  ==========================================
  Faster R-CNN (all)      "maxpool"        P6 = max_pool(P5, kernel 1, stride 2)
  RetinaNet mmdet         "input"          P6 = conv3x3/2(C5), P7 = conv3x3/2(P6)
  RetinaNet detectron2    "input"          same, ReLU before P7's conv
  RetinaNet torchvision   "output"         P6 = conv3x3/2(P5), P7 = conv(ReLU(P6))
  ======================  ===============  ==========================================

  ``relu_before_extra_convs`` puts a ReLU in front of every extra conv but the
  first, as mmdet's flag and torchvision's ``LastLevelP6P7`` do.
* ``CSPNeXtPAFPN`` (RTMDet): top-down then bottom-up paths of CSP layers, and a 3x3
  output conv per level.

Shapes: inputs are a list of (B, C_i, H_i, W_i), finest first, each level half the
size of the previous one (rounded up); outputs are (B, out_channels, H_i, W_i).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reference.backbones import ConvBNAct, CSPLayer

__all__ = ["FPN", "CSPNeXtPAFPN"]

_EXTRA_SOURCES = ("maxpool", "input", "output")


class FPN(nn.Module):
    """Feature pyramid network with the upstream extra-level variants.

    Args:
        in_channels: channels of every backbone map given to ``forward``.
        out_channels: width of every pyramid level (256 upstream).
        num_outs: number of pyramid levels returned.
        start_level: index of the first backbone map used (mmdet RetinaNet uses
            C3..C5 of C2..C5: start_level=1); earlier maps are ignored.
        extra_source: "maxpool", "input" or "output" (see the module docstring);
            only read when ``num_outs`` exceeds the number of used maps.
        relu_before_extra_convs: ReLU before the second and later extra convs.

    ``forward(feats)``: list of (B, in_channels[i], H_i, W_i) -> list of
    ``num_outs`` maps (B, out_channels, H_l, W_l), finest first.
    """

    def __init__(self, in_channels: list[int], out_channels: int, num_outs: int,
                 start_level: int = 0, extra_source: str = "maxpool",
                 relu_before_extra_convs: bool = False) -> None:
        super().__init__()
        in_channels = list(in_channels)
        if not 0 <= start_level < len(in_channels):
            raise ValueError(f"start_level={start_level!r}: expected 0..{len(in_channels) - 1}")
        used = len(in_channels) - start_level
        if num_outs < used:
            raise ValueError(f"num_outs={num_outs!r}: expected at least the {used} used inputs")
        if extra_source not in _EXTRA_SOURCES:
            raise ValueError(f"extra_source={extra_source!r}: expected one of {_EXTRA_SOURCES}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.start_level = start_level
        self.extra_source = extra_source
        self.relu_before_extra_convs = relu_before_extra_convs
        self.lateral_convs = nn.ModuleList(
            nn.Conv2d(c, out_channels, 1) for c in in_channels[start_level:])
        self.output_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(used))
        self.extra_convs = nn.ModuleList()
        if extra_source != "maxpool":
            for i in range(num_outs - used):
                c_in = in_channels[-1] if (i == 0 and extra_source == "input") else out_channels
                self.extra_convs.append(nn.Conv2d(c_in, out_channels, 3, stride=2, padding=1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # Xavier-uniform-like init (kaiming_uniform with a=1), bias 0, as
                # torchvision and detectron2 ("caffe2_xavier") do.
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f"feats: got {len(feats)} maps, expected {len(self.in_channels)}")
        inputs = feats[self.start_level:]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]  # (B, out, H_i, W_i)
        # Top-down: each level adds the coarser one, upsampled to its exact size
        # (sizes need not be exact halves when the input is not divisible).
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        outs = [conv(x) for conv, x in zip(self.output_convs, laterals)]
        while len(outs) < self.num_outs:
            k = len(outs) - len(laterals)  # index of the extra level being made
            if self.extra_source == "maxpool":
                outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
                continue
            if k == 0:
                source = inputs[-1] if self.extra_source == "input" else outs[-1]
            else:
                source = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
            outs.append(self.extra_convs[k](source))  # (B, out, ceil(H/2), ceil(W/2))
        return outs


class CSPNeXtPAFPN(nn.Module):
    """RTMDet's path-aggregation FPN built from CSP layers (mmdet ``CSPNeXtPAFPN``).

    Args:
        in_channels: channels of the backbone maps, finest first (tiny 96, 192, 384).
        out_channels: width of every output level (tiny 96, s 128).
        num_csp_blocks: CSPNeXt blocks in every CSP layer (1 for tiny and s).
        expand_ratio: hidden width ratio of the CSP layers.

    ``forward(feats)``: list of (B, in_channels[i], H_i, W_i) -> list of
    (B, out_channels, H_i, W_i), same number of levels.
    """

    def __init__(self, in_channels: list[int], out_channels: int, num_csp_blocks: int = 3,
                 expand_ratio: float = 0.5) -> None:
        super().__init__()
        c = list(in_channels)
        n = len(c)
        self.in_channels = c
        self.out_channels = out_channels
        # Top-down, coarsest first: reduce the coarse map to the finer map's width,
        # upsample x2, concat with the finer map, CSP layer.
        self.reduce_layers = nn.ModuleList(ConvBNAct(c[i], c[i - 1], 1) for i in range(n - 1, 0, -1))
        self.top_down_blocks = nn.ModuleList(
            CSPLayer(2 * c[i - 1], c[i - 1], num_csp_blocks, add_identity=False,
                     expand_ratio=expand_ratio) for i in range(n - 1, 0, -1))
        # Bottom-up, finest first: stride-2 conv, concat with the coarser map, CSP layer.
        self.downsamples = nn.ModuleList(ConvBNAct(c[i], c[i], 3, stride=2) for i in range(n - 1))
        self.bottom_up_blocks = nn.ModuleList(
            CSPLayer(2 * c[i], c[i + 1], num_csp_blocks, add_identity=False,
                     expand_ratio=expand_ratio) for i in range(n - 1))
        self.out_convs = nn.ModuleList(ConvBNAct(c[i], out_channels, 3) for i in range(n))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f"feats: got {len(feats)} maps, expected {len(self.in_channels)}")
        n = len(feats)
        # Top-down path; inner[0] is always the finest map made so far.
        inner = [feats[-1]]
        for j, i in enumerate(range(n - 1, 0, -1)):
            high = self.reduce_layers[j](inner[0])  # (B, c[i-1], H_i, W_i)
            inner[0] = high
            up = F.interpolate(high, size=feats[i - 1].shape[-2:], mode="nearest")
            inner.insert(0, self.top_down_blocks[j](torch.cat([up, feats[i - 1]], dim=1)))
        # Bottom-up path.
        outs = [inner[0]]
        for i in range(n - 1):
            down = self.downsamples[i](outs[-1])  # (B, c[i], H_{i+1}, W_{i+1})
            outs.append(self.bottom_up_blocks[i](torch.cat([down, inner[i + 1]], dim=1)))
        return [conv(x) for conv, x in zip(self.out_convs, outs)]

