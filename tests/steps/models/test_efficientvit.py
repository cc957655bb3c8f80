"""TinyEfficientViTSeg and its Micro variant: shapes, budgets, features, the EfficientViT blocks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from steps.models import count_parameters, create_model, parameter_limit, portable_state_dict
from steps.models.efficientvit import CascadedGroupAttention, EfficientViTBlock, WindowAttention, token_grids
from steps.models.layers import ConvBN, fuse_conv_bn

SEG_MODELS = ("tiny_efficientvit", "tiny_efficientvit_micro")
# Exact counts: a change to the architecture must change these deliberately.
EXPECTED_PARAMETERS = {"tiny_efficientvit": 33_648, "tiny_efficientvit_micro": 9_916}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero residual branches, attention biases and BN statistics: eval mode is no identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
            elif isinstance(module, CascadedGroupAttention):
                module.row_bias.normal_(0, 0.5, generator=generator)
                module.col_bias.normal_(0, 0.5, generator=generator)
    return model.eval()


@pytest.mark.parametrize("name", SEG_MODELS)
@pytest.mark.parametrize("batch", [1, 3])
def test_full_frame_gives_two_class_logits_at_full_resolution(name, batch):
    model = create_model(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(batch, 1, 400, 640))
    assert logits.shape == (batch, 2, 400, 640)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", SEG_MODELS)
def test_parameter_count_is_exact_and_under_the_limit(name):
    params = count_parameters(create_model(name))
    assert params == EXPECTED_PARAMETERS[name]
    assert params < parameter_limit(name)


def test_variants_have_the_specified_dimensions():
    default, micro = create_model("tiny_efficientvit").config, create_model("tiny_efficientvit_micro").config
    assert (default.embed_dim, default.depth, default.num_heads) == ((8, 16, 24), (2, 1, 1), (1, 1, 2))
    assert (default.stem, default.stem_dims, default.mixers[0], micro.mixers[1]) == ("patch", (16, 16), "conv", "conv")
    assert (micro.embed_dim, micro.num_heads, micro.decoder_dim) == ((8, 12, 18), (1, 1, 1), 8)
    # the default fuses the 1/4 skip (no logit refinement); micro has no 1/4 skip to fuse
    assert (default.decoder_skips, default.logit_refine_dim, micro.decoder_skips) == (2, 0, 1)


def test_forward_features_are_the_multi_scale_pyramid():
    model = create_model("tiny_efficientvit").eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 1, 400, 640))
    shapes = [tuple(f.shape[1:]) for f in features]
    assert shapes == [(16, 100, 160), (16, 50, 80),                # stem skips 1/4, 1/8
                      (8, 25, 40), (16, 13, 20), (24, 7, 10)]       # stages 1/16, 1/32, 1/64
    assert token_grids((400, 640)) == [(25, 40), (13, 20), (7, 10)]


@pytest.mark.parametrize("size", [(100, 170), (64, 64), (75, 130)])
def test_odd_input_sizes_line_up_with_the_skips(size):
    model = create_model("tiny_efficientvit_micro").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, *size)).shape == (2, 2, *size)


def test_every_stage_uses_the_efficientvit_sandwich_block():
    model = create_model("tiny_efficientvit")
    blocks = [m for m in model.modules() if isinstance(m, EfficientViTBlock)]
    assert len(blocks) == sum(model.config.depth) == 4
    for block in blocks:
        assert [name for name, _ in block.named_children()] == ["dw0", "ffn0", "mixer", "dw1", "ffn1"]
        assert block.dw0.branch.conv.groups == block.dw0.branch.conv.in_channels  # depthwise
    batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert batchnorms == sum(isinstance(m, ConvBN) for m in model.modules()) > 40


def stage_mixers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [block.mixer.branch for block in model.modules() if isinstance(block, EfficientViTBlock)]


def test_default_mixes_by_depthwise_conv_at_1_16_and_attends_globally_below():
    model = create_model("tiny_efficientvit")
    first, *rest = stage_mixers(model)[-3:]
    conv = first.conv
    assert isinstance(first, ConvBN) and conv.groups == conv.in_channels == 8
    assert conv.kernel_size == (model.config.conv_kernel,) * 2
    assert [type(m) for m in rest] == [CascadedGroupAttention, CascadedGroupAttention]
    assert not any(isinstance(m, WindowAttention) for m in model.modules())


def test_window_option_makes_the_first_stage_attend_within_5x8_windows():
    model = create_model("tiny_efficientvit", mixers=("window", "attention", "attention"), depth=(1, 1, 1))
    mixers = stage_mixers(model)
    assert isinstance(mixers[0], WindowAttention) and mixers[0].window == (5, 8)
    assert mixers[0].attention.row_bias.shape[1:] == (5,) and mixers[0].attention.col_bias.shape[1:] == (8,)
    assert [type(m) for m in mixers[1:]] == [CascadedGroupAttention, CascadedGroupAttention]


def test_patch_stem_patchifies_to_1_4_and_the_conv_stem_halves_three_times():
    patch = create_model("tiny_efficientvit").encoder.stem[0][0].conv
    assert (patch.kernel_size, patch.stride, patch.padding) == ((8, 8), (4, 4), (2, 2))  # 4x4 patches, 2 px overlap
    conv = create_model("tiny_efficientvit", stem="conv", stem_dims=(8, 8, 16), decoder_skips=3, logit_refine_dim=0).eval()
    with torch.no_grad():
        shapes = [tuple(f.shape[2:]) for f in conv.forward_features(torch.randn(1, 1, 400, 640))]
        assert shapes[:3] == [(200, 320), (100, 160), (50, 80)]
        assert conv(torch.randn(1, 1, 400, 640)).shape == (1, 2, 400, 640)


@pytest.mark.parametrize("size", [(10, 16), (7, 13)])  # whole windows, and padded ones
def test_window_attention_is_global_attention_inside_each_window(size):
    attention = randomized(CascadedGroupAttention(dim=16, key_dim=4, num_heads=2, bias_grid=(5, 8)))
    windowed = WindowAttention(attention, (5, 8)).eval()
    x = torch.randn(2, 16, *size)
    with torch.no_grad():
        out = windowed(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out[..., :5, :8], attention(x[..., :5, :8]))  # one whole window alone
        poked = x.clone()
        poked[..., 5:, 8:] += 1.0  # only tokens outside the first window change
        torch.testing.assert_close(windowed(poked)[..., :5, :8], out[..., :5, :8])


def test_single_logit_head_returns_opposite_class_logits():
    model = randomized(create_model("tiny_efficientvit"))
    assert model.decoder.head.out_channels == 1
    with torch.no_grad():
        logits = model(torch.randn(1, 1, 96, 160))
    torch.testing.assert_close(logits[:, 0], -logits[:, 1])
    assert logits[:, 1].abs().max() > 0


def two_head_attention() -> CascadedGroupAttention:
    torch.manual_seed(0)
    attention = CascadedGroupAttention(dim=16, key_dim=4, num_heads=2, bias_grid=(7, 10))
    return randomized(attention)


def test_attention_is_cascaded_head_to_head():
    attention = two_head_attention()
    x = torch.randn(2, 16, 7, 10)
    poked_head0 = x.clone()
    poked_head0[:, :8] += torch.randn(2, 8, 7, 10)  # head 0's channel slice only
    poked_head1 = x.clone()
    poked_head1[:, 8:] += torch.randn(2, 8, 7, 10)  # head 1's channel slice only
    with torch.no_grad():
        base, from0, from1 = (attention.head_outputs(t) for t in (x, poked_head0, poked_head1))
    assert not torch.allclose(from0[1], base[1], atol=1e-4)  # head 1 sees head 0's output
    torch.testing.assert_close(from1[0], base[0])           # head 0 never sees head 1's slice
    assert not torch.allclose(from1[1], base[1], atol=1e-4)


def test_queries_go_through_a_depthwise_conv():
    attention = two_head_attention()
    for q_conv in attention.q_convs:
        assert q_conv.conv.groups == q_conv.conv.in_channels == attention.key_dim
        assert q_conv.conv.kernel_size == (5, 5)


def test_attention_bias_is_learned_and_changes_the_output():
    attention = two_head_attention().train()
    assert isinstance(attention.row_bias, torch.nn.Parameter) and attention.row_bias.shape == (2, 7)
    assert isinstance(attention.col_bias, torch.nn.Parameter) and attention.col_bias.shape == (2, 10)
    attention(torch.randn(2, 16, 7, 10)).square().sum().backward()
    assert attention.row_bias.grad.abs().sum() > 0 and attention.col_bias.grad.abs().sum() > 0
    attention.eval()
    x = torch.randn(1, 16, 7, 10)
    with torch.no_grad():
        before = torch.cat(attention.head_outputs(x), 1)
        attention.col_bias[:, 1] += 3.0  # favour horizontal neighbours
        assert not torch.allclose(torch.cat(attention.head_outputs(x), 1), before, atol=1e-4)


def test_training_and_export_bias_paths_compute_the_same_logits():
    attention = two_head_attention()
    q, k = torch.randn(2, 70, 4), torch.randn(2, 4, 70)
    offsets_y = (torch.arange(7)[:, None] - torch.arange(7)[None, :]).abs()
    offsets_x = (torch.arange(10)[:, None] - torch.arange(10)[None, :]).abs()
    rows, cols = attention.row_bias[0][offsets_y], attention.col_bias[0][offsets_x]
    with torch.no_grad():
        exported = attention.eval().biased_logits(q, k, rows, cols)
        trained = attention.train().biased_logits(q, k, rows, cols)
    torch.testing.assert_close(trained, exported)
    bias = exported - q @ k  # relative: the same for every pair at the same offset
    torch.testing.assert_close(bias[0, 0 * 10 + 0, 1 * 10 + 2], bias[1, 3 * 10 + 5, 4 * 10 + 7], atol=1e-5, rtol=0)


def test_fused_conv_bn_model_matches_the_original():
    model = randomized(create_model("tiny_efficientvit"))
    fused = fuse_conv_bn(model)
    x = torch.randn(2, 1, 96, 160)
    with torch.no_grad():
        expected = model(x)
        # float32 rounding grows with the logits' scale (~200 with these randomized statistics)
        torch.testing.assert_close(fused(x), expected, atol=1e-5 * float(expected.abs().max()), rtol=1e-4)
    assert not any(isinstance(m, ConvBN) for m in fused.modules())


def test_config_round_trips_through_json_and_the_registry():
    model = create_model("tiny_efficientvit_micro")
    config = json.loads(json.dumps(dataclasses.asdict(model.config)))  # as stored in checkpoints
    rebuilt = create_model("tiny_efficientvit_micro", **config)
    rebuilt.load_state_dict(portable_state_dict(model), strict=True)
    assert rebuilt.config == model.config


def test_unknown_or_inconsistent_options_fail_with_the_field_name():
    with pytest.raises(ValueError, match="unknown option.*embed_dims"):
        create_model("tiny_efficientvit", embed_dims=(8, 16, 24))
    with pytest.raises(ValueError, match="num_heads"):
        create_model("tiny_efficientvit", num_heads=(3, 1, 2))


@pytest.mark.slow
def test_exports_with_a_dynamic_batch_axis():
    """torch.export (the dynamo ONNX exporter's front end) with batch symbolic; runs at 1 and 3."""
    model = randomized(create_model("tiny_efficientvit_micro"))
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, 1, 400, 640),), dynamic_shapes=({0: batch},))
    for size in (1, 3):
        x = torch.randn(size, 1, 400, 640)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), model(x), atol=1e-4, rtol=1e-4)
