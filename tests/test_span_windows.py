"""Window attention over clusters whose cells lie in several windows (``span_windows``)."""
import pytest
import torch
from detectron2.modeling.backbone.vit import Attention

from ailurus.attention import reduced_attention
from ailurus.layouts import window_layout
from ailurus.tokens import TokenState, grid_state

# A 4 x 4 grid in 2 x 2 windows. Token 0 is a cluster of the cells (0, 1), (0, 2), (1, 1), (1, 2), its
# anchor (0, 1) in window 0, two of its cells in window 1; every other cell is a token of its own.
H = W = 4
CLUSTER = [1, 2, 5, 6]


def _state() -> TokenState:
    others = [i for i in range(H * W) if i not in CLUSTER]
    anchors = [1] + others
    assign = torch.zeros(H * W, dtype=torch.long)
    assign[others] = torch.arange(1, len(anchors))
    positions = torch.tensor([[a // W, a % W] for a in anchors])[None]
    sizes = torch.tensor([[4.0] + [1.0] * len(others)])
    return TokenState(grid_hw=(H, W), positions=positions, sizes=sizes, assign=assign[None])


def _attention() -> Attention:
    return Attention(dim=16, num_heads=2, qkv_bias=True, use_rel_pos=False).eval()


def test_the_cluster_is_a_key_in_each_window_weighted_by_its_cells_there():
    layout = window_layout(_state(), 2, span_windows=True)
    slots = {(s, int(t)): float(layout.slot_weight[s, p]) for s in range(4) for p, t in enumerate(layout.slot_token[s])
             if t < 13}
    assert slots[(0, 0)] == 0.5 and slots[(1, 0)] == 0.5  # two of its four cells in windows 0 and 1
    assert all(w == 1.0 for (s, t), w in slots.items() if t != 0)
    key_bias = layout.key_code[:, 0, :, -1]
    assert key_bias[0][layout.slot_token[0] == 0].item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    # In window 1 the cluster sits at the rounded mean of its cells there, (0.5, 2) -> (1, 2): local (1, 0).
    in_window_1 = layout.slot_token[1] == 0
    assert (layout.rows[1][in_window_1].item(), layout.cols[1][in_window_1].item()) == (1, 0)
    assert (layout.rows[0][layout.slot_token[0] == 0].item(), layout.cols[0][layout.slot_token[0] == 0].item()) == (0, 1)

    anchored = window_layout(_state(), 2, span_windows=False)
    assert (anchored.slot_token[1] == 0).sum() == 0 and anchored.slot_weight.max() == 1.0


def test_a_cluster_of_identical_cells_attends_as_its_cells_do_on_the_grid():
    """Without relative positions, spanning windows is exact: every other token's output equals its
    output on the grid, and the cluster's is the mean of its cells'. Anchored in one window, the
    tokens of the other lose the cluster from their keys."""
    attn, state = _attention(), _state()
    tokens = torch.randn(1, 13, 16)
    grid_tokens = tokens[0, state.assign[0]][None]  # every cell carries its token's features
    with torch.no_grad():
        on_grid = reduced_attention(grid_tokens, window_layout(grid_state(1, (H, W), tokens.device), 2), attn)[0]
        spanning = reduced_attention(tokens, window_layout(state, 2, span_windows=True), attn)[0]
        anchored = reduced_attention(tokens, window_layout(state, 2, span_windows=False), attn)[0]
    expected = torch.zeros(13, 16).index_add(0, state.assign[0], on_grid) / state.sizes[0, :, None]
    torch.testing.assert_close(spanning, expected, rtol=1e-5, atol=1e-6)
    # The tokens of cells (0, 3) and (1, 3), in window 1 beside two of the cluster's cells.
    window_1 = [int(state.assign[0, 3]), int(state.assign[0, 7])]
    assert (anchored[window_1] - expected[window_1]).abs().max() > 1e-2


def test_on_the_grid_both_modes_are_the_same_layout():
    state = grid_state(2, (5, 7), torch.device("cpu"))
    a, b = window_layout(state, 3, span_windows=False), window_layout(state, 3, span_windows=True)
    for name in ("slot_token", "slot_weight", "rows", "cols", "key_code"):
        assert torch.equal(getattr(a, name), getattr(b, name))
