"""Backbones: images in, a list of feature maps out (finest first).

Two families live here:

* ``ResNetBackbone`` wraps torchvision's ResNet-18/50 (built with ``weights=None``;
  nothing is downloaded) and returns the stage outputs C2..C5 at strides 4, 8, 16,
  32. Upstream configs freeze the stem and the first stage (mmdet
  ``frozen_stages=1``, torchvision ``trainable_layers=3``) and keep BatchNorm
  statistics fixed (mmdet ``norm_eval=True``; torchvision and detectron2 replace BN
  with a frozen copy when they start from pretrained weights). Both knobs are
  constructor arguments here.
* ``CSPNeXt`` is RTMDet's backbone, written out here: a 3-conv stem, then four
  stages of (stride-2 conv, [SPPF on the last stage], CSP layer of CSPNeXt blocks).
  ``deepen_factor`` scales the number of blocks, ``widen_factor`` the channels
  (tiny: 0.167 / 0.375, s: 0.33 / 0.5).

Shape legend: ``N`` images, ``C`` channels, ``H, W`` input size; a feature at
stride ``s`` is ``(N, C_s, ceil(H / s), ceil(W / s))`` for the usual padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = [
    "ResNetBackbone",
    "CSPNeXt",
    "ConvBNAct",
    "CSPLayer",
    "CSPNeXtBlock",
    "ChannelAttention",
    "SPPFBottleneck",
    "freeze_batch_norm",
]

_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
_NORM_MODES = ("bn", "bn_eval", "frozen_bn")


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a ``FrozenBatchNorm2d``.

    The frozen copy keeps weight, bias and running statistics as buffers, so they
    neither train nor count as parameters (what torchvision and detectron2 do for a
    backbone started from pretrained weights). Returns the (possibly new) module.
    """
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_batch_norm(child)
        if new is not child:
            setattr(module, name, new)
    return module


class ResNetBackbone(nn.Module):
    """torchvision ResNet without its classifier, returning stage outputs.

    Args:
        depth: 18 or 50 (34 and 101 work too; only 18 and 50 are tested).
        out_stages: which of C2..C5 to return, as stage numbers 2..5, increasing.
        frozen_stages: -1 trains everything; k >= 0 freezes the stem (conv1, bn1)
            and, for k >= 1, the first k stages (mmdet's ``frozen_stages``;
            torchvision's ``trainable_layers = 4 - k`` for k >= 1).
        norm: "bn" (ordinary BatchNorm), "bn_eval" (BatchNorm kept in eval mode
            while training, mmdet ``norm_eval=True``; its affine parameters train
            unless frozen by ``frozen_stages``), "frozen_bn" (``FrozenBatchNorm2d``).

    ``forward(images)``: images (N, 3, H, W) float -> list of (N, C_k, H_k, W_k),
    one per entry of ``out_stages``; ``out_channels`` lists C_k
    (ResNet-18: 64, 128, 256, 512; ResNet-50: 256, 512, 1024, 2048).

    The torchvision module is kept as ``self.body`` with its own parameter names,
    so a torchvision detector's ``backbone.body.*`` weights load one to one.
    """

    def __init__(self, depth: int = 50, out_stages: tuple[int, ...] = (2, 3, 4, 5),
                 frozen_stages: int = -1, norm: str = "bn") -> None:
        super().__init__()
        builders = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34,
                    50: torchvision.models.resnet50, 101: torchvision.models.resnet101}
        if depth not in builders:
            raise ValueError(f"depth={depth!r}: expected one of {sorted(builders)}")
        if norm not in _NORM_MODES:
            raise ValueError(f"norm={norm!r}: expected one of {_NORM_MODES}")
        out_stages = tuple(out_stages)
        if not out_stages or any(s not in (2, 3, 4, 5) for s in out_stages) or \
                list(out_stages) != sorted(set(out_stages)):
            raise ValueError(f"out_stages={out_stages!r}: expected increasing stage numbers in 2..5")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages={frozen_stages!r}: expected -1..4")
        body = builders[depth](weights=None)
        del body.fc, body.avgpool  # detection never uses the classifier
        self.body = freeze_batch_norm(body) if norm == "frozen_bn" else body
        self.depth = depth
        self.out_stages = out_stages
        self.frozen_stages = frozen_stages
        self.norm = norm
        widths = (64, 128, 256, 512) if depth < 50 else (256, 512, 1024, 2048)
        self.out_channels = [widths[s - 2] for s in out_stages]
        self.strides = [2 ** s for s in out_stages]
        self._freeze()

    def _freeze(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.body.conv1, self.body.bn1]
        frozen += [getattr(self.body, name) for name in _RESNET_STAGES[: self.frozen_stages]]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNetBackbone":
        super().train(mode)
        if mode and self.norm == "bn_eval":
            # mmdet norm_eval: statistics stay at their (pretrained) values.
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))  # (N, 64, H/4, W/4)
        outs = []
        for stage, name in enumerate(_RESNET_STAGES, start=2):
            x = getattr(b, name)(x)  # (N, C_stage, H / 2**stage, W / 2**stage)
            if stage in self.out_stages:
                outs.append(x)
            if stage == self.out_stages[-1]:
                break
        return outs


# --------------------------------------------------------------------------- CSPNeXt
# mmdet's RTMDet configs: BN momentum 0.03 (PyTorch convention), eps 0.001, SiLU.
_BN_MOMENTUM, _BN_EPS = 0.03, 0.001


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU, mmcv's ``ConvModule`` in RTMDet configs.

    Children are named ``conv``, ``bn``, ``act`` so a head can share ``conv`` across
    levels while keeping ``bn`` per level.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise k x k ConvBNAct then pointwise 1x1 ConvBNAct."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_ch, in_ch, kernel_size, groups=in_ch)
        self.pointwise = ConvBNAct(in_ch, out_ch, 1)


class CSPNeXtBlock(nn.Module):
    """3x3 conv, then a 5x5 depthwise-separable conv, plus the input when shapes allow.

    (N, in_ch, H, W) -> (N, out_ch, H, W); ``expansion`` sets the hidden width.
    """

    def __init__(self, in_ch: int, out_ch: int, expansion: float = 1.0,
                 add_identity: bool = True, kernel_size: int = 5) -> None:
        super().__init__()
        hidden = int(out_ch * expansion)
        self.conv1 = ConvBNAct(in_ch, hidden, 3)
        self.conv2 = DepthwiseSeparableConv(hidden, out_ch, kernel_size)
        self.add_identity = add_identity and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class ChannelAttention(nn.Module):
    """x * hardsigmoid(fc(global_avg_pool(x))): one gate per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.hardsigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))  # (N, C, 1, 1)
        return x * gate


class CSPLayer(nn.Module):
    """Cross-stage-partial layer: two 1x1 branches, blocks on one, concat, 1x1 fuse.

    (N, in_ch, H, W) -> (N, out_ch, H, W). The "main" branch runs ``num_blocks``
    CSPNeXt blocks; the "short" branch is a single 1x1 conv; both are
    ``out_ch * expand_ratio`` wide. ``channel_attention`` gates the concatenation.
    """

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, add_identity: bool = True,
                 expand_ratio: float = 0.5, channel_attention: bool = False) -> None:
        super().__init__()
        mid = int(out_ch * expand_ratio)
        self.main_conv = ConvBNAct(in_ch, mid, 1)
        self.short_conv = ConvBNAct(in_ch, mid, 1)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, mid, 1.0, add_identity)
                                      for _ in range(num_blocks)])
        self.attention = ChannelAttention(2 * mid) if channel_attention else nn.Identity()
        self.final_conv = ConvBNAct(2 * mid, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.blocks(self.main_conv(x))  # (N, mid, H, W)
        short = self.short_conv(x)  # (N, mid, H, W)
        return self.final_conv(self.attention(torch.cat([main, short], dim=1)))


class SPPFBottleneck(nn.Module):
    """1x1 conv to half width, concat with max pools of kernel 5, 9, 13, 1x1 conv out."""

    def __init__(self, in_ch: int, out_ch: int, kernel_sizes: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        mid = in_ch // 2
        self.conv1 = ConvBNAct(in_ch, mid, 1)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = ConvBNAct(mid * (len(kernel_sizes) + 1), out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.pools], dim=1))


class CSPNeXt(nn.Module):
    """RTMDet's backbone (mmdet ``CSPNeXt``, arch "P5").

    Args:
        deepen_factor: blocks per stage = max(round(n * deepen_factor), 1) for
            n = 3, 6, 6, 3.
        widen_factor: channels = int(c * widen_factor) for c = 64 (stem), 128, 256,
            512, 1024.
        out_stages: stage numbers to return among 1..4 (default 2, 3, 4: strides
            8, 16, 32).

    ``forward(images)``: (N, 3, H, W) -> list of (N, C_k, H / 2**(k+1), W / 2**(k+1)).
    tiny (0.167, 0.375) gives channels 96, 192, 384; s (0.33, 0.5) 128, 256, 512.
    """

    # (in, out, blocks, add_identity, use_spp) before scaling, mmdet's arch "P5".
    _ARCH = ((64, 128, 3, True, False), (128, 256, 6, True, False),
             (256, 512, 6, True, False), (512, 1024, 3, False, True))

    def __init__(self, deepen_factor: float = 1.0, widen_factor: float = 1.0,
                 out_stages: tuple[int, ...] = (2, 3, 4), expand_ratio: float = 0.5,
                 channel_attention: bool = True) -> None:
        super().__init__()
        if deepen_factor <= 0 or widen_factor <= 0:
            raise ValueError(f"deepen_factor={deepen_factor!r}, widen_factor={widen_factor!r}: "
                             "expected positive numbers")
        if not out_stages or any(s not in (1, 2, 3, 4) for s in out_stages):
            raise ValueError(f"out_stages={out_stages!r}: expected stage numbers in 1..4")
        stem = int(self._ARCH[0][0] * widen_factor)
        self.stem = nn.Sequential(
            ConvBNAct(3, stem // 2, 3, stride=2),
            ConvBNAct(stem // 2, stem // 2, 3),
            ConvBNAct(stem // 2, stem, 3),
        )
        self.stages = nn.ModuleList()
        for c_in, c_out, n, add_identity, use_spp in self._ARCH:
            c_in, c_out = int(c_in * widen_factor), int(c_out * widen_factor)
            layers = [ConvBNAct(c_in, c_out, 3, stride=2)]
            if use_spp:
                layers.append(SPPFBottleneck(c_out, c_out))
            layers.append(CSPLayer(c_out, c_out, max(round(n * deepen_factor), 1), add_identity,
                                   expand_ratio, channel_attention))
            self.stages.append(nn.Sequential(*layers))
        self.out_stages = tuple(out_stages)
        self.out_channels = [int(self._ARCH[s - 1][1] * widen_factor) for s in self.out_stages]
        self.strides = [2 ** (s + 1) for s in self.out_stages]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)  # (N, C_stem, H/2, W/2)
        outs = []
        for number, stage in enumerate(self.stages, start=1):
            x = stage(x)  # (N, C_k, H / 2**(k+1), W / 2**(k+1))
            if number in self.out_stages:
                outs.append(x)
        return outs
