"""AiluRusViT against Detectron2's ViT on the same weights."""
import pytest
import torch
from conftest import tiny_vit_kwargs
from detectron2.modeling import ViT
from detectron2.modeling.backbone.utils import get_abs_pos

from ailurus import AiluRusViT


def _pair(**ailurus_kwargs):
    ref = ViT(**tiny_vit_kwargs()).eval()
    ours = AiluRusViT(**tiny_vit_kwargs(), **ailurus_kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def test_state_dict_round_trip_is_strict():
    ref = ViT(**tiny_vit_kwargs())
    ours = AiluRusViT(**tiny_vit_kwargs())
    assert ref.state_dict().keys() == ours.state_dict().keys()
    ours.load_state_dict(ref.state_dict(), strict=True)
    back = ViT(**tiny_vit_kwargs())
    back.load_state_dict(ours.state_dict(), strict=True)
    for key, value in ref.state_dict().items():
        assert value.shape == ours.state_dict()[key].shape
        assert torch.equal(value, back.state_dict()[key])


# 112 x 144 px is a 7 x 9 token grid: not a multiple of the window (3), so border windows carry
# Detectron2's zero-padding keys.
@pytest.mark.parametrize("hw", [(112, 144), (128, 128)])
def test_disabled_equals_detectron2(hw):
    ref, ours = _pair(enabled=False)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        expected, got = ref(x)["last_feat"], ours(x)["last_feat"]
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("enabled", [False, True])
def test_row_major_tokens_and_a_default_layout_feature_map_with_ailurus_on_and_off(enabled):
    """Detectron2's patch embedding is a channel-major view, its ViT's residual stream stays so, and
    the feature map it returns is NCHW-contiguous; ours runs row-major tokens (the same values) and
    returns the map in the same NCHW layout with AiluRus on and off, so the pyramid and the heads
    run the same convolution kernels in both."""
    ref, ours = _pair(enabled=enabled, keep_ratio=0.5, cluster_layer=2, knn_k=3, radius=1, assign_radius=2)
    x = torch.randn(2, 3, 112, 144)
    assert not ref.patch_embed(x).is_contiguous()
    with torch.no_grad():
        grid, _ = ours.grid_tokens(x, 1)
        got = ours(x)["last_feat"]
        pos = get_abs_pos(ref.pos_embed, ref.pretrain_use_cls_token, (7, 9))
        expected_grid = ref.blocks[0](ref.patch_embed(x) + pos)
    assert grid.is_contiguous() and got.is_contiguous()
    assert _relative_error(expected_grid, grid) <= 1e-5
    if not enabled:
        assert _relative_error(ref(x)["last_feat"], got) <= 1e-5


@pytest.mark.parametrize("cluster_layer, span_windows", [(1, False), (3, False), (1, True)])
def test_keep_all_reduced_path_equals_detectron2(cluster_layer, span_windows):
    ref, ours = _pair(keep_ratio=1.0, cluster_layer=cluster_layer, knn_k=3, radius=1, assign_radius=2,
                      span_windows=span_windows)
    x = torch.randn(2, 3, 112, 144)
    x[1, :, 80:] = 0  # zero padding at the bottom of image 1: the padding-aware path runs too
    with torch.no_grad():
        expected = ref(x)["last_feat"]
        tokens, state = ours.forward_tokens(x)
    # The reduced path really ran: tokens are reordered clusters, not the grid.
    assert not state.is_grid
    assert tokens.shape[1] == 7 * 9
    assert not torch.equal(state.assign[0], torch.arange(63))
    assert torch.equal(state.sizes, torch.ones_like(state.sizes))
    with torch.no_grad():
        got = ours(x)["last_feat"]
    assert _relative_error(expected, got) <= 1e-4


def test_keep_all_residual_unfold_equals_copy():
    _, copy = _pair(keep_ratio=1.0, knn_k=3, radius=1, assign_radius=1)
    residual = AiluRusViT(**tiny_vit_kwargs(), keep_ratio=1.0, knn_k=3, radius=1, assign_radius=1, unfold="residual")
    residual.load_state_dict(copy.state_dict(), strict=True)
    x = torch.randn(1, 3, 112, 144)
    with torch.no_grad():
        assert _relative_error(copy(x)["last_feat"], residual(x)["last_feat"]) <= 1e-5


def test_reduction_changes_output_but_keeps_it_close():
    ref, ours = _pair(keep_ratio=0.5, cluster_layer=3, knn_k=3, radius=1, assign_radius=2)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected, got = ref(x)["last_feat"], ours(x)["last_feat"]
        tokens, _ = ours.forward_tokens(x)
    assert tokens.shape[1] == 32
    err = _relative_error(expected, got)
    assert 1e-4 < err < 1.0


def test_fp16_autocast_bias_stays_finite_and_backward_is_finite():
    """AMP keeps the token state in fp32 but runs attention in fp16: masked keys (large negative
    fp32 values) must not overflow to -inf, which gives NaN gradients on empty windows."""
    from ailurus.attention import attention_bias
    from ailurus.layouts import window_layout

    model = AiluRusViT(**tiny_vit_kwargs(), keep_ratio=0.1, cluster_layer=1, knn_k=3, radius=1, assign_radius=1)
    x = torch.randn(2, 3, 112, 144)
    with torch.no_grad():
        _, state = model.forward_tokens(x)
    layout = window_layout(state, 3)
    assert layout.key_code.dtype == torch.float32
    assert (layout.key_code[..., -2] < -1e30).any()  # some slots are empty (masked)
    q = torch.randn(layout.slot_token.shape[0], 4, layout.slot_token.shape[1], 16).half()
    assert torch.isfinite(attention_bias(q, layout, model.blocks[2].attn)).all()
    with torch.autocast("cpu", dtype=torch.float16):
        out = model(x)["last_feat"]
    out.float().pow(2).mean().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
