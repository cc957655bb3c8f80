"""Small building blocks shared by the model families: Conv2d+BatchNorm, squeeze-excite, residual, FFN.

Every convolution is followed by a BatchNorm and has no bias of its own, so `fuse_conv_bn` can fold the
pair into one Conv2d for inference (fewer ONNX nodes, same outputs).
"""

from __future__ import annotations

import copy
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

_Pair = tuple[int, int]


class ConvBN(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d; `bn_weight_init=0` makes a residual branch start as identity."""

    conv: nn.Conv2d
    bn: nn.BatchNorm2d

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, bn_weight_init: float = 1.0, padding: int | None = None) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.add_module("conv", nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding,
                                          groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chans))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """One Conv2d computing what this pair computes in eval mode (running statistics)."""
        conv, bn = self.conv, self.bn
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("fuse needs a BatchNorm2d that tracks running statistics")
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        # Conv2d stores its 2-D hyperparameters as tuples of two ints (the stubs say tuple[int, ...]).
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, cast(_Pair, conv.kernel_size), cast(_Pair, conv.stride),
                          cast("str | _Pair", conv.padding), dilation=cast(_Pair, conv.dilation),
                          groups=conv.groups, bias=True)
        if fused.bias is None:
            raise AssertionError("Conv2d(bias=True) has a bias")
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused.to(conv.weight.device)


def conv_bn_relu(in_chans: int, out_chans: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1) -> nn.Sequential:
    return nn.Sequential(ConvBN(in_chans, out_chans, kernel_size, stride, groups), nn.ReLU())


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 + pointwise 1x1, each with BatchNorm and ReLU: a 3x3 receptive field at ~1/9 the cost."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(conv_bn_relu(in_chans, in_chans, 3, groups=in_chans),
                         conv_bn_relu(in_chans, out_chans, 1))


class Residual(nn.Module):
    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class FFN(nn.Sequential):
    """Pointwise expand, ReLU, pointwise project (EfficientViT's FFN); the projection starts at zero."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.add_module("pw1", ConvBN(dim, hidden))
        self.add_module("act", nn.ReLU())
        self.add_module("pw2", ConvBN(hidden, dim, bn_weight_init=0.0))


class SqueezeExcite(nn.Module):
    """Channel gating from globally pooled features (as in EfficientViT's patch merging)."""

    def __init__(self, chans: int, ratio: float = 0.25) -> None:
        super().__init__()
        hidden = max(1, round(chans * ratio))
        self.reduce = nn.Conv2d(chans, hidden, 1)
        self.expand = nn.Conv2d(hidden, chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)
        gate = self.expand(F.relu(self.reduce(gate)))
        return x * torch.sigmoid(gate)


def upsample_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinear resize to the reference's spatial size: odd sizes (25 -> 13 -> 7) always line up."""
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


def init_weights(model: nn.Module) -> None:
    """He init for convolutions (ReLU nets), small normal for linear layers; BatchNorm set by ConvBN."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every ConvBN folded into one Conv2d (for export and inference only)."""
    fused = copy.deepcopy(model).eval()
    _replace_conv_bn(fused)
    return fused


def _replace_conv_bn(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, ConvBN):
            setattr(module, name, child.fuse())
        else:
            _replace_conv_bn(child)
