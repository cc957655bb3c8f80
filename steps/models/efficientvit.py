"""TinyEfficientViTSeg: an EfficientViT-MSRA encoder scaled down for 400x640 pupil segmentation.

Structure (Liu et al. 2023, "EfficientViT: Memory Efficient Vision Transformer with Cascaded Group
Attention"; reference: microsoft/Cream EfficientViT and timm's efficientvit_msra.py):

- a patchify stem (4x4 patches with 2 px overlap: an 8x8 stride-4 conv to 1/4, then a stride-2 3x3
  conv to 1/8; ConvNeXt-style) whose outputs are the skip features; the conv stem of four stride-2
  convs stays an option (`stem="conv"`);
- three stages at 1/16, 1/32, 1/64 (25x40, 13x20, 7x10 tokens for 400x640); stages 2 and 3 start with
  EfficientViT's subsample block (depthwise conv + FFN, patch merging with squeeze-excite, depthwise
  conv + FFN);
- each block is the EfficientViT sandwich: residual depthwise conv, residual FFN, residual token
  mixer, residual depthwise conv, residual FFN, with BatchNorm and ReLU throughout.

Differences from the classification model, on purpose (onnxruntime's per-node profile on one thread
decided most of them; figures from the 2-core development machine):
- the token mixer is chosen per stage (`mixers`). At 1/16 the default mixes with a 9x9 depthwise conv:
  global attention over 1,000 tokens (a 1,000 x 1,000 softmax and two broadcast bias adds) was 55%
  of the old default's ONNX time. The 1/32 and 1/64 stages attend globally, so the whole frame is
  still in view (7x7-style windows at 1/16, `mixers=("window", ...)`, predicted pupil in the dark lens
  border of all three real frames);
- the relative-position attention bias is decomposed into a row table and a column table
  (bias(i, j) = row[|dy|] + col[|dx|], as in MViTv2's decomposed relative positions); in eval mode it is
  added to the (H, W, H, W) view of the logits, so no N x N tensor ever becomes a constant; offsets
  come from the actual grid (clamped to the table), so any input size runs;
- the stem skips the 1/2-resolution convs: 1 -> 8 channels at 200x320 is padded to 16-channel blocks
  by onnxruntime's NCHWc layout and cost 0.8 ms; the patchify conv costs 0.14 ms;
- a light FPN/U-Net decoder: 1x1 laterals, bilinear upsampling to each skip's exact size, separable
  3x3 refinement; it fuses the 1/8 and 1/4 skips and predicts one pupil-vs-background logit d at 1/4
  (the previous default fused 1/8 only and refined the one logit at 1/4, `LogitRefine`), bilinearly
  upsampled once to the input size and returned as the two class logits (-d, d) by one broadcast
  multiply (the same softmax as two free logits: only their difference matters).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH
from steps.models.layers import FFN, ConvBN, Residual, SeparableConv, SqueezeExcite, conv_bn_relu, init_weights, upsample_to
from steps.models.registry import ModelSpec, make_config, register_model

Stem = Literal["conv", "patch"]
Mixer = Literal["attention", "window", "conv"]


@dataclass(frozen=True)
class EfficientViTEncoderConfig:
    """The stem and the three EfficientViT stages (shared by the segmentation and ellipse models)."""

    in_chans: int = 1
    img_size: tuple[int, int] = (IMAGE_HEIGHT, IMAGE_WIDTH)  # sizes the attention-bias tables; other sizes still run
    # "patch": a patch_size x patch_size patchify conv (stride patch_size), then stride-2 3x3 convs to 1/8
    # (patch 4: stem_dims at 1/4, 1/8; patch 8: at 1/8 only); "conv": three stride-2 3x3 convs (stem_dims
    # at 1/2, 1/4, 1/8). The stem outputs are the skip features.
    stem: Stem = "patch"
    patch_size: int = 4
    patch_overlap: int = 2     # pixels each patch reaches into its neighbours on every side (2: an 8x8 conv)
    stem_dims: tuple[int, ...] = (16, 16)
    embed_dim: tuple[int, int, int] = (8, 16, 24)   # stage channels at 1/16, 1/32, 1/64
    depth: tuple[int, int, int] = (2, 1, 1)
    num_heads: tuple[int, int, int] = (1, 1, 2)
    key_dim: tuple[int, int, int] = (4, 4, 4)       # query/key channels per head
    q_kernel: int = 5                               # depthwise conv on the queries
    ffn_ratio: float = 2.0
    merge_ratio: float = 4.0                        # patch-merging expansion
    subsample_blocks: bool = True                   # dw conv + FFN before and after each patch merging
    # Token mixer per stage: global cascaded group attention, attention within `window`, or a
    # depthwise `conv_kernel` conv (no N x N work: global attention at 1/16 was 55% of the ONNX time).
    mixers: tuple[Mixer, Mixer, Mixer] = ("conv", "attention", "attention")
    window: tuple[int, int] = (5, 8)                # attention window (tokens) of the "window" stages
    conv_kernel: int = 9

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):  # configs read back from JSON/checkpoints carry lists
                object.__setattr__(self, field.name, tuple(value))
        for name in ("embed_dim", "depth", "num_heads", "key_dim", "mixers"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name}: expected 3 values, got {getattr(self, name)}")
        if self.stem not in ("conv", "patch") or self.patch_size not in (2, 4, 8) or not 0 <= self.patch_overlap <= 4:
            raise ValueError(f"stem/patch_size/patch_overlap: expected conv|patch, 2, 4 or 8, and 0..4, got "
                             f"{self.stem!r}, {self.patch_size}, {self.patch_overlap}")
        if len(self.stem_dims) != len(self.stem_strides):
            raise ValueError(f"stem_dims: the {self.stem!r} stem takes {len(self.stem_strides)} values "
                             f"(strides {self.stem_strides}), got {self.stem_dims}")
        if not set(self.mixers) <= {"attention", "window", "conv"} or min(self.window) < 1 or self.conv_kernel < 1:
            raise ValueError(f"mixers/window/conv_kernel: expected attention|window|conv, positive sizes, got "
                             f"{self.mixers}, {self.window}, {self.conv_kernel}")
        for dim, heads in zip(self.embed_dim, self.num_heads):
            if heads < 1 or dim % heads:
                raise ValueError(f"embed_dim/num_heads: {dim} channels do not split into {heads} heads")

    @property
    def stem_strides(self) -> tuple[int, ...]:
        """Stride of each stem output (the skip features), finest first."""
        first = 2 if self.stem == "conv" else self.patch_size
        return tuple(2 ** k for k in range(first.bit_length() - 1, 4))


@dataclass(frozen=True)
class EfficientViTSegConfig(EfficientViTEncoderConfig):
    num_classes: int = 2
    decoder_dim: int = 16
    # Stem skips the decoder fuses, coarse to fine: 1 = 1/8, 2 adds 1/4 (16 channels upsampled to
    # 100x160), 3 adds 1/2 (the conv stem's). The default fuses 1/4: against 1/8 plus a one-channel
    # logit refinement at 1/4 it placed the real pupils' border better (real pupil IoU 0.926-0.929
    # against 0.876-0.909 over three seeds) for 0.3 ms more (2.28 against 1.98 ms, Dec 6 2026).
    decoder_skips: int = 2
    # One pupil logit d, returned as (-d, d): one full-resolution upsample instead of two.
    single_logit: bool = True
    # Refine the pupil logit at the next finer stem skip (upsampled logit + skip -> pointwise,
    # depthwise, pointwise -> a residual correction): some of the boundary detail of fusing that skip
    # at a fraction of its cost, since only one channel is upsampled. Needs a skip finer than the
    # decoder's (decoder_skips=1 with the patch stem: the previous default, logit_refine_dim 8).
    logit_refine_dim: int = 0  # 0: off

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.decoder_skips <= len(self.stem_dims):
            raise ValueError(f"decoder_skips: expected 0..{len(self.stem_dims)} (the {self.stem!r} stem's skips), "
                             f"got {self.decoder_skips}")
        if self.single_logit and self.num_classes != 2:
            raise ValueError(f"single_logit: needs num_classes 2, got {self.num_classes}")
        if self.logit_refine_dim and not (self.single_logit and len(self.stem_dims) > self.decoder_skips):
            raise ValueError(f"logit_refine_dim: needs single_logit and a stem skip finer than the decoder's "
                             f"(stem_dims {self.stem_dims}, decoder_skips {self.decoder_skips}); set it to 0")


def token_grids(img_size: tuple[int, int], first_stride_exp: int = 4, stages: int = 3) -> list[tuple[int, int]]:
    """Token grid per stage for stride-2 convs with padding 1: each halving rounds up (25 -> 13 -> 7)."""
    grids = []
    height, width = img_size
    for step in range(first_stride_exp + stages - 1):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
        if step >= first_stride_exp - 1:
            grids.append((height, width))
    return grids


def relative_offsets(size: int, table_len: int, device: torch.device) -> torch.Tensor:
    """|i - j| for positions along one axis, clamped to the last table entry (size x size, int64)."""
    position = torch.arange(size, device=device)
    return (position[:, None] - position[None, :]).abs().clamp(max=table_len - 1)


class CascadedGroupAttention(nn.Module):
    """EfficientViT's cascaded group attention over all tokens of the feature map.

    Head i attends over its own channel slice plus head i-1's output (the cascade), with a depthwise
    conv on its queries and a learned relative-position bias; outputs are concatenated and projected.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, bias_grid: tuple[int, int], q_kernel: int = 5) -> None:
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.head_dim = dim // num_heads
        self.scale = key_dim ** -0.5
        self.qkvs = nn.ModuleList(ConvBN(self.head_dim, 2 * key_dim + self.head_dim) for _ in range(num_heads))
        self.q_convs = nn.ModuleList(ConvBN(key_dim, key_dim, q_kernel, groups=key_dim) for _ in range(num_heads))
        self.proj = nn.Sequential(nn.ReLU(), ConvBN(self.head_dim * num_heads, dim, bn_weight_init=0.0))
        # Decomposed relative-position bias: one value per head and vertical / horizontal offset.
        self.row_bias = nn.Parameter(torch.zeros(num_heads, bias_grid[0]))
        self.col_bias = nn.Parameter(torch.zeros(num_heads, bias_grid[1]))

    def head_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-head outputs (B, head_dim, H, W) before the projection; exposed to test the cascade."""
        height, width = x.shape[-2:]
        dy = relative_offsets(height, self.row_bias.shape[1], x.device)
        dx = relative_offsets(width, self.col_bias.shape[1], x.device)
        slices = x.chunk(self.num_heads, dim=1)
        outputs: list[torch.Tensor] = []
        for head, (qkv, q_conv) in enumerate(zip(self.qkvs, self.q_convs)):
            feat = slices[head] if head == 0 else slices[head] + outputs[-1]
            q, k, v = qkv(feat).split([self.key_dim, self.key_dim, self.head_dim], dim=1)
            q = (q_conv(q) * self.scale).flatten(2).transpose(1, 2)  # (B, N, key_dim)
            row_bias, col_bias = self.row_bias[head][dy], self.col_bias[head][dx]  # (H, H), (W, W)
            attn = self.biased_logits(q, k.flatten(2), row_bias, col_bias).softmax(dim=-1)  # (B, N, N)
            out = attn @ v.flatten(2).transpose(1, 2)  # (B, N, head_dim)
            outputs.append(out.transpose(1, 2).unflatten(2, (height, width)))
        return outputs

    def biased_logits(self, q: torch.Tensor, k: torch.Tensor, row_bias: torch.Tensor,
                      col_bias: torch.Tensor) -> torch.Tensor:
        """q @ k + bias(i, j), with bias = row_bias[yi, yj] + col_bias[xi, xj] over token pairs.

        Training adds the full N x N bias inside the matmul (baddbmm: the fastest on CPU). Eval (and so
        ONNX export) adds the two small tables to the (H, W, H, W) view of the logits instead: the same
        numbers, but no N x N tensor computed only from weights, which an exporter would fold into a
        megabytes-large constant.
        """
        height, width = row_bias.shape[0], col_bias.shape[0]
        if self.training:
            bias = (row_bias[:, None, :, None] + col_bias[None, :, None, :]).reshape(height * width, -1)
            return torch.baddbmm(bias, q, k)
        logits = (q @ k).unflatten(2, (height, width)).unflatten(1, (height, width))  # (B, H, W, H, W)
        logits = logits + row_bias[:, None, :, None] + col_bias[None, :, None, :]
        return logits.flatten(3).flatten(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat(self.head_outputs(x), dim=1))


class WindowAttention(nn.Module):
    """Attention within non-overlapping windows (EfficientViT's LocalWindowAttention).

    The map is zero-padded on the bottom/right to whole windows (no padding at 400x640 with 5x8
    windows on the 25x40 grid), the windows become batch entries, and the result is cropped back.
    """

    def __init__(self, attention: nn.Module, window: tuple[int, int]) -> None:
        super().__init__()
        self.attention, self.window = attention, tuple(window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, chans, height, width = x.shape
        win_h, win_w = self.window
        pad_h, pad_w = (-height) % win_h, (-width) % win_w
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        rows, cols = (height + pad_h) // win_h, (width + pad_w) // win_w
        windows = x.view(batch, chans, rows, win_h, cols, win_w).permute(0, 2, 4, 1, 3, 5)
        out = self.attention(windows.reshape(batch * rows * cols, chans, win_h, win_w))
        out = out.view(batch, rows, cols, chans, win_h, win_w).permute(0, 3, 1, 4, 2, 5)
        out = out.reshape(batch, chans, rows * win_h, cols * win_w)
        return out[:, :, :height, :width] if pad_h or pad_w else out


def depthwise_residual(dim: int, bn_weight_init: float = 0.0) -> Residual:
    return Residual(ConvBN(dim, dim, 3, groups=dim, bn_weight_init=bn_weight_init))


def token_mixer(kind: Mixer, dim: int, key_dim: int, num_heads: int, bias_grid: tuple[int, int], q_kernel: int,
                window: tuple[int, int], conv_kernel: int) -> nn.Module:
    """A stage's mixer: global attention (bias tables over the whole grid), windowed attention (tables
    over one window), or a depthwise conv that starts as identity inside its residual."""
    if kind == "conv":
        return ConvBN(dim, dim, conv_kernel, groups=dim, bn_weight_init=0.0)
    attention = CascadedGroupAttention(dim, key_dim, num_heads, window if kind == "window" else bias_grid, q_kernel)
    return WindowAttention(attention, window) if kind == "window" else attention


class EfficientViTBlock(nn.Module):
    """The sandwich: depthwise conv, FFN, token mixer, depthwise conv, FFN (all residual)."""

    def __init__(self, dim: int, hidden: int, mixer: nn.Module) -> None:
        super().__init__()
        self.dw0 = depthwise_residual(dim)
        self.ffn0 = Residual(FFN(dim, hidden))
        self.mixer = Residual(mixer)
        self.dw1 = depthwise_residual(dim)
        self.ffn1 = Residual(FFN(dim, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


class PatchMerging(nn.Module):
    """EfficientViT's downsampling: 1x1 expand, depthwise 3x3 stride 2, squeeze-excite, 1x1 project."""

    def __init__(self, dim: int, out_dim: int, ratio: float) -> None:
        super().__init__()
        hidden = max(1, round(dim * ratio))
        self.expand = conv_bn_relu(dim, hidden, 1)
        self.down = conv_bn_relu(hidden, hidden, 3, stride=2, groups=hidden)
        self.se = SqueezeExcite(hidden)
        self.project = ConvBN(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.down(self.expand(x))))


class Subsample(nn.Sequential):
    """EfficientViT's 'subsample' op between stages: (dw conv + FFN), patch merging, (dw conv + FFN)."""

    def __init__(self, dim: int, out_dim: int, ffn_ratio: float, merge_ratio: float, blocks: bool = True) -> None:
        super().__init__()
        if blocks:
            self.add_module("res1", nn.Sequential(depthwise_residual(dim, 1.0),
                                                  Residual(FFN(dim, max(1, round(dim * ffn_ratio))))))
        self.add_module("merge", PatchMerging(dim, out_dim, merge_ratio))
        if blocks:
            self.add_module("res2", nn.Sequential(depthwise_residual(out_dim, 1.0),
                                                  Residual(FFN(out_dim, max(1, round(out_dim * ffn_ratio))))))


def make_stem(config: EfficientViTEncoderConfig) -> nn.ModuleList:
    """The stem layers; each output is a skip feature (strides `config.stem_strides`).

    The patchify stem replaces the 1/2-resolution convs: onnxruntime ran them at 0.79 ms on one
    thread (1 -> 8 channels at 200x320 is padded to 16-channel blocks), a 4x4 stride-4 conv at 0.14 ms;
    the 2 px overlap adds about 0.3 ms to the whole model and bought real-frame pupil IoU (0.873 -> 0.918).
    """
    c = config
    layers: list[nn.Module] = []
    if c.stem == "patch":
        size, overlap = c.patch_size, c.patch_overlap
        layers.append(nn.Sequential(ConvBN(c.in_chans, c.stem_dims[0], size + 2 * overlap, stride=size, padding=overlap),
                                    nn.ReLU()))
    else:
        layers.append(conv_bn_relu(c.in_chans, c.stem_dims[0], 3, 2))
    layers += [conv_bn_relu(a, b, 3, 2) for a, b in zip(c.stem_dims, c.stem_dims[1:])]
    return nn.ModuleList(layers)


class EfficientViTEncoder(nn.Module):
    """Stem + three EfficientViT stages; returns the stem's skip features, then 1/16, 1/32, 1/64."""

    def __init__(self, config: EfficientViTEncoderConfig) -> None:
        super().__init__()
        c = config
        self.stem = make_stem(c)
        self.patch_embed = ConvBN(c.stem_dims[-1], c.embed_dim[0], 3, stride=2)  # to 1/16, no ReLU (as EfficientViT)
        grids = token_grids(c.img_size)
        stages = []
        for i, (dim, depth, heads, key_dim) in enumerate(zip(c.embed_dim, c.depth, c.num_heads, c.key_dim)):
            down = (Subsample(c.embed_dim[i - 1], dim, c.ffn_ratio, c.merge_ratio, c.subsample_blocks)
                    if i else nn.Identity())
            hidden = max(1, round(dim * c.ffn_ratio))
            blocks = [EfficientViTBlock(dim, hidden, token_mixer(c.mixers[i], dim, key_dim, heads, grids[i],
                                                                 c.q_kernel, c.window, c.conv_kernel))
                      for _ in range(depth)]
            stages.append(nn.Sequential(down, *blocks))
        self.stages = nn.ModuleList(stages)
        self.feature_channels = (*c.stem_dims, *c.embed_dim)
        self.feature_strides = (*c.stem_strides, 16, 32, 64)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.stem:
            x = layer(x)
            features.append(x)
        x = self.patch_embed(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class SegDecoder(nn.Module):
    """Top-down fusion of the stages at 1/16, then skip fusion at 1/8 (1/4, 1/2), an optional refinement
    of the one logit at the next finer skip; logits at the input size."""

    class_sign: torch.Tensor

    def __init__(self, stem_dims: Sequence[int], embed_dim: Sequence[int], dim: int, num_classes: int,
                 skips: int = 3, single_logit: bool = False, refine_dim: int = 0) -> None:
        super().__init__()
        self.stage_laterals = nn.ModuleList(ConvBN(c, dim) for c in embed_dim)
        self.fuse = SeparableConv(dim, dim)
        used = list(reversed(stem_dims))[:skips]  # coarse to fine: 1/8, 1/4, (1/2)
        self.skip_laterals = nn.ModuleList(ConvBN(c, dim) for c in used)
        self.refine = nn.ModuleList(SeparableConv(dim, dim) for _ in used)
        self.single_logit = single_logit
        self.head = nn.Conv2d(dim, 1 if single_logit else num_classes, 1)
        # (-d, d) from one broadcast Mul at full resolution: 0.1 ms less than Neg + Concat in onnxruntime.
        self.register_buffer("class_sign", torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1), persistent=False)
        self.skips = skips
        self.logit_refine = LogitRefine(stem_dims[-skips - 1], refine_dim) if refine_dim else None

    def forward(self, features: Sequence[torch.Tensor], output_size: Sequence[int]) -> torch.Tensor:
        skips, stages = features[:-3], features[-3:]
        x = self.stage_laterals[2](stages[2])
        for lateral, stage in ((self.stage_laterals[1], stages[1]), (self.stage_laterals[0], stages[0])):
            x = upsample_to(x, stage) + lateral(stage)
        x = self.fuse(x)
        for lateral, refine, skip in zip(self.skip_laterals, self.refine, reversed(skips)):
            x = refine(upsample_to(x, skip) + lateral(skip))
        logits = self.head(x)
        if self.logit_refine is not None:
            logits = self.logit_refine(logits, skips[-self.skips - 1])
        logits = F.interpolate(logits, size=tuple(output_size), mode="bilinear", align_corners=False)
        # Negating after the upsample: one full-resolution Resize of one channel, then the sign.
        return logits * self.class_sign if self.single_logit else logits


class LogitRefine(nn.Module):
    """A one-channel logit upsampled to a finer skip, plus a correction computed from both there."""

    def __init__(self, skip_dim: int, dim: int) -> None:
        super().__init__()
        self.mix = conv_bn_relu(skip_dim + 1, dim, 1)
        self.local = conv_bn_relu(dim, dim, 3, groups=dim)
        self.correction = nn.Conv2d(dim, 1, 1)

    def forward(self, logit: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        coarse = upsample_to(logit, skip)
        return coarse + self.correction(self.local(self.mix(torch.cat([coarse, skip], dim=1))))


class TinyEfficientViTSeg(nn.Module):
    """(B, in_chans, H, W) float -> (B, num_classes, H, W) logits."""

    def __init__(self, config: EfficientViTSegConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = EfficientViTEncoder(config)
        self.decoder = SegDecoder(config.stem_dims, config.embed_dim, config.decoder_dim, config.num_classes,
                                  config.decoder_skips, config.single_logit, config.logit_refine_dim)
        # He init everywhere, the head included: a near-zero head (logits ~ 0) was tried and learned the
        # all-background answer first, reaching pupil IoU 0 after 300 steps where He init reached 0.90.
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features: stem skips at 1/2, 1/4, 1/8 and the stages at 1/16, 1/32, 1/64."""
        return self.encoder(x)

    def forward_head(self, features: Sequence[torch.Tensor], output_size: Sequence[int]) -> torch.Tensor:
        return self.decoder(features, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), x.shape[-2:])


# -- the variants (SPEC 3: default < 60,000 parameters, micro < 10,000) ------------------------------

# TinyEfficientViT: embed_dim (8, 16, 24), depth (2, 1, 1), heads (1, 1, 2); one logit at 1/4
# (EfficientViTSegConfig's defaults).
DEFAULT = register_model(ModelSpec(
    "tiny_efficientvit", "TinyEfficientViT", "segmentation", build=TinyEfficientViTSeg,
    config=EfficientViTSegConfig(), checkpoint_stem="efficientvit_model", parameter_limit=60_000))
# Micro keeps the sandwich blocks and drops what the parameter budget and the 2 ms latency budget
# cannot carry: 8x8 patches straight to 1/8 (no 1/4 skip, so no logit refinement), narrower stem and
# FFNs, one block per stage, attention only at 1/64, a 2x patch-merging expansion, and no extra dw
# conv + FFN around the patch merging (each stage's first block starts with exactly that).
MICRO = register_model(ModelSpec(
    "tiny_efficientvit_micro", "TinyEfficientViT-Micro", "segmentation", build=TinyEfficientViTSeg,
    config=EfficientViTSegConfig(patch_size=8, patch_overlap=2, stem_dims=(8,), embed_dim=(8, 12, 18),
                                 depth=(1, 1, 1), num_heads=(1, 1, 1), mixers=("conv", "conv", "attention"),
                                 conv_kernel=7, ffn_ratio=1.0, merge_ratio=2.0, subsample_blocks=False,
                                 decoder_dim=8, decoder_skips=1, logit_refine_dim=0),
    checkpoint_stem="efficientvit_tiny_model", parameter_limit=10_000))
DEFAULT_CONFIG, MICRO_CONFIG = DEFAULT.config, MICRO.config


def tiny_efficientvit(**overrides: Any) -> TinyEfficientViTSeg:
    """TinyEfficientViT (the `tiny_efficientvit` variant), `overrides` applied to its config."""
    return TinyEfficientViTSeg(make_config(EfficientViTSegConfig, DEFAULT_CONFIG, overrides))


def tiny_efficientvit_micro(**overrides: Any) -> TinyEfficientViTSeg:
    """TinyEfficientViT-Micro (the `tiny_efficientvit_micro` variant), `overrides` applied to its config."""
    return TinyEfficientViTSeg(make_config(EfficientViTSegConfig, MICRO_CONFIG, overrides))
