"""The peer reducers (ToMe, ToMe per window, Expedite, pooling) next to AiluRus: each equals the
baseline at no reduction, keeps batch independence and finite outputs, and does its own job."""
import math

import pytest
import torch
from conftest import tiny_vit_kwargs

from ailurus import AiluRusViT
from ailurus.tokens import merge, unfold
from ailurus.reducers import REDUCERS, ClusteringInput
from ailurus.settings import AiluRusSettings
from ailurus.reducers.cells import regular_cells
from ailurus.reducers.tome import bipartite_merge

KNOBS = dict(cluster_layer=2, knn_k=3, radius=1, assign_radius=2)
ALL = sorted(REDUCERS)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def _pair(reducer: str, keep: float, **kwargs):
    reduced = AiluRusViT(**tiny_vit_kwargs(), **KNOBS, keep_ratio=keep, reducer=reducer, **kwargs).eval()
    baseline = AiluRusViT(**tiny_vit_kwargs(), **KNOBS, enabled=False).eval()
    baseline.load_state_dict(reduced.state_dict())
    return reduced, baseline


# 112 x 144 px: a 7 x 9 grid, window 3 (border windows padded), the first image half zero padding.
@pytest.mark.parametrize("unfold_mode", ["copy", "residual"])
@pytest.mark.parametrize("reducer", ALL)
def test_every_reducer_equals_the_baseline_at_no_reduction(reducer, unfold_mode):
    reduced, baseline = _pair(reducer, 1.0, unfold=unfold_mode)
    images = torch.randn(2, 3, 112, 144)
    images[0, :, 64:] = 0
    with torch.no_grad():
        tokens, _ = reduced.forward_tokens(images)
        assert tokens.shape[1] == 63
        assert _relative_error(baseline(images)["last_feat"], reduced(images)["last_feat"]) <= 1e-4


def test_reconstruct_unfold_with_one_neighbour_is_exact_at_no_reduction():
    reduced, baseline = _pair("expedite", 1.0)
    assert reduced.unfold_mode == "reconstruct"  # Expedite's own unfold by default
    images = torch.randn(2, 3, 112, 144)
    with torch.no_grad():
        tokens, state = reduced.forward_tokens(images)
        grid = unfold(tokens, state, "reconstruct", topk=1).permute(0, 3, 1, 2)
        assert _relative_error(baseline(images)["last_feat"], grid) <= 1e-4
        # With its default 4 neighbours it is a convex mix, dominated by the token itself.
        assert _relative_error(baseline(images)["last_feat"], reduced(images)["last_feat"]) <= 0.05


@pytest.mark.parametrize("reducer", ALL)
def test_every_reducer_keeps_an_image_independent_of_its_batch(reducer):
    model = AiluRusViT(**tiny_vit_kwargs(), **KNOBS, keep_ratio=0.35, reducer=reducer, check_finite=False).eval()
    images = torch.randn(4, 3, 112, 144)
    images[0] = math.nan
    images[2, :, :, 100:] = 0
    images[3] = 0.5  # constant: every token alike
    with torch.no_grad():
        batched = model(images)["last_feat"]
        assert not torch.isfinite(batched[0]).all()
        assert torch.isfinite(batched[1:]).all()
        for i in (1, 2, 3):
            assert _relative_error(model(images[i : i + 1])["last_feat"][0], batched[i]) <= 1e-5


@pytest.mark.parametrize("reducer", ALL)
def test_reduced_tokens_are_valid_clusters(reducer):
    model = AiluRusViT(**tiny_vit_kwargs(), **KNOBS, keep_ratio=0.3, reducer=reducer).eval()
    x = torch.randn(2, 7, 9, 64)
    inp = ClusteringInput(x=x, num_clusters=model.clusters_for(63), is_pad=torch.zeros(2, 7, 9, dtype=torch.bool),
                      window_size=3, keys=torch.randn(2, 7, 9, 16),
                      settings=AiluRusSettings(knn_k=3, radius=1, assign_radius=2))
    clusters = REDUCERS[reducer].cluster(inp)
    M = clusters.anchors.shape[1]
    if reducer in ("ailurus", "tome", "tome_window"):
        assert M == math.ceil(0.3 * 63)
    elif reducer == "pool":  # a regular grid: round(7 * sqrt(19 / 63)) x round(9 * sqrt(19 / 63)) cells
        assert M == 4 * 5
    else:  # per window: rows 3 + 3 + 1 split in 2 + 2 + 1 parts, cols 3 + 3 + 3 in 2 + 2 + 2
        assert M == 5 * 6
    for b in range(2):
        assert torch.equal(clusters.assign[b, clusters.anchors[b]], torch.arange(M))
        assert torch.bincount(clusters.assign[b], minlength=M).min() >= 1
        assert clusters.anchors[b].unique().numel() == M


@pytest.mark.parametrize("reducer", ["tome_window", "expedite"])
def test_window_reducers_never_cross_a_window_border(reducer):
    H, W, ws = 7, 9, 3
    inp = ClusteringInput(x=torch.randn(1, H, W, 32), num_clusters=20, is_pad=torch.zeros(1, H, W, dtype=torch.bool),
                      window_size=ws, keys=torch.randn(1, H, W, 16))
    clusters = REDUCERS[reducer].cluster(inp)
    grid = torch.arange(H * W)
    window = (grid // W // ws) * 3 + (grid % W) // ws
    anchor_window = window[clusters.anchors[0]]
    assert torch.equal(window, anchor_window[clusters.assign[0]])


def test_tome_merges_the_most_similar_pairs_first():
    keys = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [1.0, 1.0]])[None]  # tokens 0 and 1 alike
    clusters = bipartite_merge(keys, [0] * 4, [3])
    assign = clusters.assign[0]
    assert assign[0] == assign[1] and len({int(assign[0]), int(assign[2]), int(assign[3])}) == 3
    assert int(clusters.anchors[0, assign[0]]) == 1  # the merged token sits at its destination (set B)


def test_tome_reaches_any_count_by_rounds_and_merges_sizes():
    keys = torch.randn(2, 64, 8)
    for keep in (1, 5, 31, 32, 33, 64):
        clusters = bipartite_merge(keys, [0] * 64, [keep])
        assert clusters.anchors.shape == (2, keep)
        assert all(torch.bincount(a, minlength=keep).sum() == 64 for a in clusters.assign)


def test_pool_is_uniform_cells():
    clusters = REDUCERS["pool"].cluster(ClusteringInput(x=torch.randn(1, 16, 16, 8), num_clusters=64,
                                                    is_pad=torch.zeros(1, 16, 16, dtype=torch.bool)))
    assert torch.equal(torch.bincount(clusters.assign[0]), torch.full((64,), 4))
    rows, cols = torch.arange(256) // 16, torch.arange(256) % 16
    assert torch.equal(clusters.assign[0], (rows // 2) * 8 + cols // 2)


def test_regular_cells_hold_their_centre_and_follow_windows():
    cells = regular_cells((14, 14), 49, 7, torch.device("cpu"))
    assert cells.shape == (8, 8)  # each 7-token window side split in floor(3.5 + 0.5) = 4 parts
    assert torch.equal(cells.cell[cells.anchors], torch.arange(64))
    assert torch.equal(cells.window, (torch.arange(64) // 8 // 4) * 2 + (torch.arange(64) % 8) // 4)


def test_expedite_clusters_follow_a_boundary_that_cuts_its_cells():
    # Left 3 columns one feature, right 5 another: the initial 2-column cells straddle column 2 | 3;
    # soft k-means moves the straddling tokens to the cell of their own kind.
    x = torch.zeros(1, 8, 8, 4)
    x[..., :3, 0] = 1.0
    x[..., 3:, 1] = 1.0
    x = x + 0.01 * torch.randn_like(x)
    clusters = REDUCERS["expedite"].cluster(ClusteringInput(x=x, num_clusters=16, is_pad=torch.zeros(1, 8, 8, dtype=torch.bool),
                                                       window_size=8))
    kind = (torch.arange(64) % 8 >= 3).long()
    anchor_kind = kind[clusters.anchors[0]]
    moved = (anchor_kind[clusters.assign[0]] != kind).sum()
    assert moved == 0


def test_reducer_knob_is_checked():
    with pytest.raises(ValueError, match="reducer='tomee'"):
        AiluRusViT(**tiny_vit_kwargs(), **KNOBS, reducer="tomee")
    with pytest.raises(ValueError, match="unfold='soft'"):
        AiluRusViT(**tiny_vit_kwargs(), **KNOBS, unfold="soft")


@pytest.mark.parametrize("reducer", ALL)
def test_every_reducer_trains(reducer):
    model = AiluRusViT(**tiny_vit_kwargs(), **KNOBS, keep_ratio=0.4, reducer=reducer).train()
    model(torch.randn(2, 3, 128, 128))["last_feat"].square().mean().backward()
    grads = [p.grad for p in model.blocks[-1].parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_confined_ailurus_clusters_stay_in_one_window():
    H, W, ws = 7, 9, 3
    x = torch.randn(2, H, W, 16)
    is_pad = torch.zeros(2, H, W, dtype=torch.bool)
    is_pad[1, 4:] = True
    grid = torch.arange(H * W)
    window = (grid // W // ws) * 3 + (grid % W) // ws
    free = REDUCERS["ailurus"].cluster(ClusteringInput(x=x, num_clusters=12, is_pad=is_pad, window_size=ws,
                                                   settings=AiluRusSettings(knn_k=3, radius=1, assign_radius=2)))
    confined = REDUCERS["ailurus"].cluster(ClusteringInput(x=x, num_clusters=12, is_pad=is_pad, window_size=ws,
                                                       settings=AiluRusSettings(knn_k=3, radius=1, assign_radius=2,
                                                                                confine_windows=True)))
    assert torch.equal(free.anchors, confined.anchors)  # the same anchors, only the assignment is confined
    crossing = [(window[free.anchors[b]][free.assign[b]] != window).sum() for b in range(2)]
    assert sum(crossing) > 0  # unconfined clusters do cross window borders here
    for b in range(2):
        # a token whose window holds an anchor of its kind (image / padding) joins one of them
        pad = is_pad[b].reshape(-1)
        anchor_kinds = {(int(window[a]), bool(pad[a])) for a in confined.anchors[b]}
        has_own = torch.tensor([(int(window[i]), bool(pad[i])) in anchor_kinds for i in range(H * W)])
        joined = window[confined.anchors[b]][confined.assign[b]]
        assert has_own.sum() > H * W // 2 and torch.equal(joined[has_own], window[has_own])
        assert torch.equal(confined.assign[b, confined.anchors[b]], torch.arange(12))


def test_confined_model_is_batch_independent_and_exact_at_no_reduction():
    reduced, baseline = _pair("ailurus", 1.0, confine_windows=True)
    images = torch.randn(3, 3, 112, 144)
    images[1, :, 64:] = 0
    with torch.no_grad():
        assert _relative_error(baseline(images)["last_feat"], reduced(images)["last_feat"]) <= 1e-4
    model = AiluRusViT(**tiny_vit_kwargs(), **KNOBS, keep_ratio=0.3, confine_windows=True).eval()
    with torch.no_grad():
        batched = model(images)["last_feat"]
        for i in range(3):
            assert _relative_error(model(images[i : i + 1])["last_feat"][0], batched[i]) <= 1e-5
