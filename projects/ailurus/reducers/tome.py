"""ToMe-style bipartite soft matching (Bolya et al., ICLR 2023), once, down to M tokens.

Tokens are split alternately into sets A and B; each A token finds its most similar B token
(cosine similarity of the attention keys of block ``cluster_layer``), and the r most similar
pairs merge into their B token, which keeps its position. One round merges at most half of the
tokens, so rounds repeat (with size-weighted mean keys) until M remain. ``tome_window`` does the
same inside every attention window, merging the same share of tokens in each (the per-window form
ToMe's authors suggest for windowed encoders).
"""
from typing import Tuple

import torch
import torch.nn.functional as F

from ..clustering import Clusters, window_ids
from .base import ClusteringInput


def _group_starts(group: torch.Tensor, num_groups: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """counts (G,) and start offsets (G,) of a sorted (T,) group array."""
    counts = torch.bincount(group, minlength=num_groups)
    return counts, counts.cumsum(0) - counts


@torch.no_grad()
def bipartite_merge(keys: torch.Tensor, group: torch.Tensor, keep: torch.Tensor) -> Clusters:
    """Merge tokens by rounds of bipartite soft matching until group g holds ``keep[g]`` tokens.

    Args:
        keys: (B, N, D) matching features of the grid tokens.
        group: (N,) group of every token (tokens only merge inside their group), the same for
            every image.
        keep: (G,) tokens left per group, 1 <= keep[g] <= group size.
    Returns:
        ``Clusters`` with M = keep.sum() anchors (each merged token's final destination) per image.
    """
    B, N, D = keys.shape
    G = keep.numel()
    device = keys.device
    order = torch.argsort(group * N + torch.arange(N, device=device))  # tokens sorted by group
    current = group[order]  # (T,) group of each current token: the same for every image
    rep = order.expand(B, N)  # (B, T) grid index of each current token (its position)
    sums = keys.float().gather(1, rep[..., None].expand(B, N, D))  # (B, T, D) size-weighted key sums
    sizes = sums.new_ones(B, N)
    assign = torch.empty_like(rep).scatter_(1, rep, torch.arange(N, device=device).expand(B, N))
    while True:
        T = current.numel()
        counts, starts = _group_starts(current, G)
        excess = counts - keep
        if not excess.any():
            break
        is_a = (torch.arange(T, device=device) - starts[current]) % 2 == 0  # alternate inside each group
        a_idx, b_idx = is_a.nonzero().squeeze(1), (~is_a).nonzero().squeeze(1)
        unit = F.normalize(sums, dim=-1)
        sim = unit[:, a_idx] @ unit[:, b_idx].transpose(1, 2)  # (B, TA, TB) cosine of mean keys
        sim = sim.masked_fill(current[a_idx][:, None] != current[b_idx][None, :], float("-inf"))
        best, dest = sim.max(-1)  # (B, TA)

        # In each group the excess (at most all its A tokens) most similar A tokens merge. A tokens
        # are already sorted by group, so sorting by score and then stably by group ranks them.
        a_group = current[a_idx]
        a_counts, a_starts = _group_starts(a_group, G)
        by_score = torch.sort(best, dim=-1, descending=True, stable=True).indices
        ranked = by_score.gather(1, torch.sort(a_group[by_score], dim=-1, stable=True).indices)
        rank = torch.arange(a_idx.numel(), device=device) - a_starts[a_group]
        take = (rank < torch.minimum(excess, a_counts)[a_group]).expand(B, -1)
        merged = torch.zeros_like(take).scatter_(1, ranked, take)  # (B, TA)

        target = torch.where(merged, b_idx[dest], a_idx)  # (B, TA) where each A token goes
        sums = sums.scatter_add(1, target[..., None].expand(-1, -1, D), sums[:, a_idx] * merged[..., None])
        sizes = sizes.scatter_add(1, target, sizes[:, a_idx] * merged)
        moved = torch.arange(T, device=device).expand(B, T).scatter(1, a_idx.expand(B, -1), target)
        survives = torch.ones(B, T, dtype=torch.bool, device=device).scatter(1, a_idx.expand(B, -1), ~merged)
        kept = survives.nonzero()[:, 1].reshape(B, -1)  # (B, T') survivors, still sorted by group
        new_index = torch.full((B, T), -1, dtype=torch.long, device=device).scatter(
            1, kept, torch.arange(kept.shape[1], device=device).expand(B, -1))
        assign = new_index.gather(1, moved.gather(1, assign))
        sums = sums.gather(1, kept[..., None].expand(-1, -1, D))
        sizes, rep, current = sizes.gather(1, kept), rep.gather(1, kept), current[kept[0]]
    return Clusters(anchors=rep, assign=assign)


def _shares(counts: torch.Tensor, total: int) -> torch.Tensor:
    """Split ``total`` over groups in proportion to ``counts`` (largest remainder), each in [1, count]."""
    exact = counts.double() * total / counts.sum()
    share = exact.floor().long().clamp(min=1)
    share = torch.minimum(share, counts)
    left = total - int(share.sum())
    if left > 0:
        room = (share < counts)
        order = torch.argsort(torch.where(room, exact - exact.floor(), -1.0), descending=True, stable=True)
        share[order[:left]] += 1
    return share


def tome_reducer(inp: ClusteringInput) -> Clusters:
    B, H, W, D = inp.keys.shape
    group = torch.zeros(H * W, dtype=torch.long, device=inp.keys.device)
    return bipartite_merge(inp.keys.reshape(B, H * W, D), group, torch.tensor([inp.num_clusters], device=group.device))


def tome_window_reducer(inp: ClusteringInput) -> Clusters:
    B, H, W, D = inp.keys.shape
    group = window_ids((H, W), inp.window_size or max(H, W), inp.keys.device)
    keep = _shares(torch.bincount(group), inp.num_clusters)
    return bipartite_merge(inp.keys.reshape(B, H * W, D), group, keep)
