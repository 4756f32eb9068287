"""Density-peak clustering against a brute-force reference, and its invariants."""
import math
from typing import Tuple

import pytest
import torch

from ailurus.clustering import cluster_tokens, density_peak_scores, neighbour_sq_distances, neighbour_table
from ailurus.tokens import merge, unfold


def _brute_scores(x: torch.Tensor, knn_k: int, radius: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(rho, delta) of docs/method.md, "Clustering", written as loops over tokens, for one image x: (H, W, C)."""
    H, W, C = x.shape
    f = x.double() / math.sqrt(C)
    rho = torch.empty(H, W, dtype=torch.double)
    nbrs = {}
    for i in range(H):
        for j in range(W):
            nbrs[i, j] = [
                (a, b)
                for a in range(max(0, i - radius), min(H, i + radius + 1))
                for b in range(max(0, j - radius), min(W, j + radius + 1))
                if (a, b) != (i, j)
            ]
            d2 = sorted(float((f[i, j] - f[a, b]).pow(2).sum()) for a, b in nbrs[i, j])
            rho[i, j] = math.exp(-sum(d2[:knn_k]) / knn_k)
    delta = torch.empty(H, W, dtype=torch.double)
    for i in range(H):
        for j in range(W):
            d = {(a, b): float((f[i, j] - f[a, b]).norm()) for a, b in nbrs[i, j]}
            denser = [p for p in nbrs[i, j] if rho[p] > rho[i, j] or (rho[p] == rho[i, j] and p[0] * W + p[1] < i * W + j)]
            delta[i, j] = min(d[p] for p in denser) if denser else max(d.values())
    return rho.reshape(-1), delta.reshape(-1)


def test_neighbour_distances_match_direct_computation():
    x = torch.randn(2, 11, 13, 16)
    radius = 2
    got = neighbour_sq_distances(x, radius)
    index, valid = neighbour_table((11, 13), radius, x.device)
    flat = x.reshape(2, -1, 16)
    direct = (flat[:, :, None, :] - flat[:, index, :]).pow(2).sum(-1)
    assert torch.isinf(got[:, ~valid]).all()
    assert torch.allclose(got[:, valid], direct[:, valid], atol=1e-4, rtol=1e-4)


def test_scores_match_brute_force():
    x = torch.randn(1, 6, 7, 8)
    index, valid = neighbour_table((6, 7), 2, x.device)
    sq_dist = neighbour_sq_distances(x / math.sqrt(8), 2)
    rho, delta = _brute_scores(x[0], 3, 2)
    scores = density_peak_scores(sq_dist, index, valid, knn_k=3, score="rho_delta")
    assert torch.allclose(scores[0].double(), rho * delta, rtol=1e-4, atol=1e-6)
    scores = density_peak_scores(sq_dist, index, valid, knn_k=3, score="delta")
    assert torch.allclose(scores[0].double(), delta, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_delta_score_clusters_do_not_depend_on_the_feature_scale(scale):
    x = torch.randn(2, 12, 14, 16)
    x[1, :, 9:] = 0  # padding too
    is_pad = (x == 0).all(-1)
    reference = cluster_tokens(x, 40, knn_k=5, radius=3, assign_radius=4, is_pad=is_pad, score="delta")
    scaled = cluster_tokens(x * scale, 40, knn_k=5, radius=3, assign_radius=4, is_pad=is_pad, score="delta")
    assert torch.equal(reference.anchors, scaled.anchors)
    assert torch.equal(reference.assign, scaled.assign)
    # the first definition, rho * delta, does depend on it
    rho_delta = [cluster_tokens(x * s, 40, knn_k=5, radius=3, assign_radius=4, is_pad=is_pad, score="rho_delta")
                 for s in (1.0, scale)]
    assert not torch.equal(rho_delta[0].anchors.sort(-1).values, rho_delta[1].anchors.sort(-1).values)


def _positions(flat: torch.Tensor, W: int) -> torch.Tensor:
    return torch.stack([flat // W, flat % W], -1)


@pytest.mark.parametrize("num_clusters", [1, 7, 30, 80])
def test_invariants(num_clusters):
    H, W, r_assign = 8, 10, 2
    x = torch.randn(3, H, W, 16)
    c = cluster_tokens(x, num_clusters, knn_k=4, radius=2, assign_radius=r_assign)
    M = num_clusters
    assert c.anchors.shape == (3, M) and c.assign.shape == (3, H * W)
    for b in range(3):
        anchors, assign = c.anchors[b], c.assign[b]
        assert anchors.unique().numel() == M  # exactly M distinct anchors
        assert torch.equal(assign[anchors], torch.arange(M))  # anchors map to themselves
        assert assign.min() >= 0 and assign.max() < M  # every token assigned
        assert torch.equal(torch.bincount(assign, minlength=M) > 0, torch.ones(M, dtype=torch.bool))
        anchor_rc = _positions(anchors, W)
        token_rc = _positions(torch.arange(H * W), W)
        cheb = (token_rc[:, None] - anchor_rc[None]).abs().amax(-1)  # (N, M)
        feat = torch.cdist(x[b].reshape(-1, 16), x[b].reshape(-1, 16)[anchors])  # (N, M)
        for i in range(H * W):
            in_reach = cheb[i] <= r_assign
            if in_reach.any():
                # the feature-closest anchor within reach
                assert in_reach[assign[i]]
                assert feat[i, assign[i]] <= feat[i][in_reach].min() + 1e-4
            else:
                # the spatially nearest anchor
                sq = (token_rc[i] - anchor_rc).pow(2).sum(-1)
                assert sq[assign[i]] == sq.min()


def test_partial_merging_keeps_the_worst_represented_tokens_single():
    """single_share 0.25 of M = 64: the clusters of M = 48 anchors, then the 16 image tokens farthest
    (in features) from their anchor leave their cluster and stay single."""
    H, W, M, S = 16, 16, 64, 16
    x = torch.randn(2, H, W, 32)
    is_pad = torch.zeros(2, H, W, dtype=torch.bool)
    is_pad[1, 12:] = True  # padding never gets a single
    x[1, 12:] = 0.0
    args = dict(knn_k=5, radius=3, assign_radius=4, is_pad=is_pad)
    coarse = cluster_tokens(x, M - S, **args)
    partial = cluster_tokens(x, M, single_share=S / M, **args)
    assert partial.anchors.shape == (2, M)
    assert torch.equal(partial.anchors[:, : M - S], coarse.anchors)
    f = x.reshape(2, H * W, 32)
    for b in range(2):
        gap = (f[b] - f[b][coarse.anchors[b][coarse.assign[b]]]).pow(2).sum(-1)
        gap[coarse.anchors[b]] = -1  # anchors stay anchors
        gap[is_pad[b].reshape(-1)] = -1
        singles = partial.anchors[b, M - S :]
        assert set(singles.tolist()) == set(gap.topk(S).indices.tolist())
        assert torch.equal(partial.assign[b, singles], torch.arange(M - S, M))
        stays = torch.ones(H * W, dtype=torch.bool)
        stays[singles] = False
        assert torch.equal(partial.assign[b, stays], coarse.assign[b, stays])
        assert torch.equal(torch.bincount(partial.assign[b], minlength=M)[M - S :], torch.ones(S, dtype=torch.long))


def test_position_weight_pulls_tokens_to_the_nearest_anchor_in_reach():
    H, W, r = 12, 12, 2
    x = torch.randn(1, H, W, 16)
    plain = cluster_tokens(x, 20, knn_k=4, radius=2, assign_radius=r)
    heavy = cluster_tokens(x, 20, knn_k=4, radius=2, assign_radius=r, position_weight=1e4)
    assert torch.equal(heavy.anchors, plain.anchors)  # only the assignment changes
    anchor_rc, token_rc = _positions(heavy.anchors[0], W), _positions(torch.arange(H * W), W)
    sq = (token_rc[:, None] - anchor_rc[None]).pow(2).sum(-1)  # (N, M)
    in_reach = (token_rc[:, None] - anchor_rc[None]).abs().amax(-1) <= r
    reached = in_reach.any(1)
    nearest = sq.masked_fill(~in_reach, 10 ** 6).amin(1)
    assert torch.equal(sq[torch.arange(H * W), heavy.assign[0]][reached], nearest[reached])
    assert not torch.equal(heavy.assign, plain.assign)


def test_deterministic_and_batch_independent():
    images = torch.randn(3, 9, 9, 32)
    args = dict(num_clusters=20, knn_k=5, radius=3, assign_radius=4)
    alone = cluster_tokens(images[1:2], **args)
    again = cluster_tokens(images[1:2], **args)
    batch = cluster_tokens(images, **args)
    assert torch.equal(alone.anchors, again.anchors) and torch.equal(alone.assign, again.assign)
    assert torch.equal(alone.anchors[0], batch.anchors[1]) and torch.equal(alone.assign[0], batch.assign[1])


def test_ties_are_broken_by_index_not_noise():
    flat = torch.zeros(1, 6, 6, 8)  # every token identical
    c = cluster_tokens(flat, 4, knn_k=3, radius=1, assign_radius=1)
    assert torch.equal(c.anchors, cluster_tokens(flat.clone(), 4, knn_k=3, radius=1, assign_radius=1).anchors)


def test_flat_half_gets_far_fewer_clusters_than_textured_half():
    H, W = 16, 16
    x = torch.randn(1, H, W, 32)
    x[:, :, : W // 2] = 0.3  # left half flat
    c = cluster_tokens(x, 64, knn_k=5, radius=3, assign_radius=4)
    cols = c.anchors[0] % W
    left, right = int((cols < W // 2).sum()), int((cols >= W // 2).sum())
    assert left + right == 64
    assert left * 4 <= right, (left, right)


def test_padding_gets_its_own_sparse_clusters():
    H, W = 16, 16
    x = torch.randn(1, H, W, 32)
    is_pad = torch.zeros(1, H, W, dtype=torch.bool)
    is_pad[:, 10:] = True
    x[:, 10:] = 0.5 + 0.01 * torch.randn(1, 6, W, 32)
    c = cluster_tokens(x, 64, knn_k=5, radius=3, assign_radius=4, is_pad=is_pad)
    pad = is_pad.reshape(1, -1)[0]
    pad_anchors = pad[c.anchors[0]]
    assert 0 < int(pad_anchors.sum()) <= 4  # a 9-stride lattice over 6 x 16 padding tokens
    # no cluster holds both padding and image tokens
    assert torch.equal(pad_anchors[c.assign[0]], pad)


def test_soft_residual_unfold_adds_the_similarity_weighted_changes_of_the_closest_clusters():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, 8)
    c = cluster_tokens(x, 6, knn_k=3, radius=1, assign_radius=2)
    tokens, state = merge(x.reshape(1, 20, 8), c, (4, 5))
    change = torch.randn(1, 6, 8)
    got = unfold(tokens + change, state, "soft_residual", topk=3, temperature=0.2).reshape(20, 8)
    pre, merged = x.reshape(20, 8), tokens[0]
    for i in range(20):  # by hand: the 3 clusters most cosine-similar to position i, softmax of sim / 0.2
        sim = torch.nn.functional.cosine_similarity(merged, pre[i][None], dim=-1)
        top = sim.topk(3)
        weights = (top.values / 0.2).softmax(0)
        assert torch.allclose(got[i], pre[i] + (weights[:, None] * change[0, top.indices]).sum(0), atol=1e-5)
    # The weights sum to one, so a change common to every cluster passes through as with the hard residual.
    assert torch.allclose(unfold(tokens + 1.0, state, "soft_residual"), x + 1.0, atol=1e-5)
    # It differs from the hard residual where a position is closer to another cluster than to its own.
    assert not torch.allclose(got, unfold(tokens + change, state, "residual").reshape(20, 8), atol=1e-3)


def test_merge_means_and_unfold():
    x = torch.randn(2, 4, 5, 8)
    c = cluster_tokens(x, 6, knn_k=3, radius=1, assign_radius=2)
    tokens, state = merge(x.reshape(2, 20, 8), c, (4, 5))
    for b in range(2):
        for m in range(6):
            members = x.reshape(2, 20, 8)[b][c.assign[b] == m]
            assert torch.allclose(tokens[b, m], members.mean(0), atol=1e-6)
            assert state.sizes[b, m] == len(members)
        assert torch.equal(state.positions[b], torch.stack([c.anchors[b] // 5, c.anchors[b] % 5], -1))
    grid = unfold(tokens, state, "copy")
    assert torch.equal(grid.reshape(2, 20, 8)[0, 7], tokens[0, c.assign[0, 7]])
    changed = tokens + 1.0
    residual = unfold(changed, state, "residual")
    assert torch.allclose(residual, x + 1.0, atol=1e-6)


def test_region_balance_ranks_each_region_on_its_own_scale():
    """Scores divided by their 16 x 16 region's mean image-token score: checked against a direct
    computation, and on an image whose top-left region has 10x the feature contrast, that region
    takes most anchors of the plain ranking and a quarter once balanced."""
    from ailurus.clustering import REGION, balance_by_region

    H, W = 2 * REGION, 2 * REGION + 5  # the right column of regions is partial
    scores = torch.rand(2, H * W)
    is_pad = torch.zeros(2, H, W, dtype=torch.bool)
    is_pad[1, :, 30:] = True
    balanced = balance_by_region(scores, is_pad.reshape(2, -1), (H, W), 0.5)
    for b in range(2):
        grid, pad = scores[b].reshape(H, W), is_pad[b]
        for r0 in range(0, H, REGION):
            for c0 in range(0, W, REGION):
                cell = (slice(r0, r0 + REGION), slice(c0, c0 + REGION))
                if (~pad[cell]).any():
                    mean = grid[cell][~pad[cell]].mean()
                    got = balanced[b].reshape(H, W)[cell][~pad[cell]]
                    assert torch.allclose(got, grid[cell][~pad[cell]] / mean.sqrt(), rtol=1e-5)
    assert torch.equal(balance_by_region(scores, is_pad.reshape(2, -1), (H, W), 0.0), scores)

    x = torch.randn(1, H, W, 16)
    x[:, :REGION, :REGION] *= 10
    args = dict(knn_k=5, radius=3, assign_radius=4)

    def top_left_share(clusters):
        rows, cols = clusters.anchors[0] // W, clusters.anchors[0] % W
        return ((rows < REGION) & (cols < REGION)).float().mean().item()

    assert top_left_share(cluster_tokens(x, 64, **args)) > 0.9
    even = cluster_tokens(x, 64, region_balance=1.0, **args)
    assert 0.15 < top_left_share(even) < 0.4 and even.anchors.unique().numel() == 64
