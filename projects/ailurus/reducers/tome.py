"""ToMe-style bipartite soft matching (Bolya et al., ICLR 2023), once, down to M tokens.

Tokens are split alternately into sets A and B; each A token finds its most similar B token
(cosine similarity of the attention keys of block ``cluster_layer``), and the r most similar
pairs merge into their B token, which keeps its position. One round merges at most half of the
tokens, so rounds repeat (with size-weighted mean keys) until M remain. ``tome_window`` does the
same inside every attention window, merging the same share of tokens in each (the per-window form
ToMe's authors suggest for windowed encoders).

How many tokens each round merges in each group depends only on the group sizes, never on the
keys, so the rounds are planned in Python (``merge_rounds``) and every tensor shape of the merge
is known before it runs.
"""
import math
from dataclasses import dataclass
from typing import Iterator, List, Sequence

import torch
import torch.nn.functional as F

from ..clustering import Clusters, window_id_list
from .base import ClusteringInput


@dataclass(frozen=True)
class MergeRound:
    """One round of bipartite matching over T current tokens sorted by group.

    a_index, b_index: positions of the A and B tokens; a_group, b_group: their groups; a_rank:
    each A token's rank among its group's A tokens; a_limit: how many A tokens of its group merge
    this round; survivors: tokens left after the round.
    """

    a_index: List[int]
    b_index: List[int]
    a_group: List[int]
    b_group: List[int]
    a_rank: List[int]
    a_limit: List[int]
    survivors: int


def merge_rounds(counts: Sequence[int], keep: Sequence[int]) -> Iterator[MergeRound]:
    """The rounds that take groups of ``counts[g]`` tokens (sorted by group) to ``keep[g]`` each."""
    counts = list(counts)
    while any(c != k for c, k in zip(counts, keep)):
        groups = [g for g, n in enumerate(counts) for _ in range(n)]
        position = [p for n in counts for p in range(n)]  # inside the token's group
        a_index = [i for i, p in enumerate(position) if p % 2 == 0]  # alternate inside each group
        b_index = [i for i, p in enumerate(position) if p % 2 == 1]
        a_count = [(n + 1) // 2 for n in counts]
        merging = [min(c - k, a) for c, k, a in zip(counts, keep, a_count)]
        yield MergeRound(
            a_index=a_index, b_index=b_index, a_group=[groups[i] for i in a_index],
            b_group=[groups[i] for i in b_index], a_rank=[p // 2 for p in position if p % 2 == 0],
            a_limit=[merging[groups[i]] for i in a_index], survivors=sum(counts) - sum(merging),
        )
        counts = [c - m for c, m in zip(counts, merging)]


@torch.no_grad()
def bipartite_merge(keys: torch.Tensor, group: Sequence[int], keep: Sequence[int]) -> Clusters:
    """Merge tokens by rounds of bipartite soft matching until group g holds ``keep[g]`` tokens.

    Args:
        keys: (B, N, D) matching features of the grid tokens.
        group: the group of each of the N tokens (tokens only merge inside their group), the same
            for every image.
        keep: tokens left per group, 1 <= keep[g] <= group size.
    Returns:
        ``Clusters`` with M = sum(keep) anchors (each merged token's final destination) per image.
    """
    B, N, D = keys.shape
    device = keys.device
    order = sorted(range(N), key=lambda i: (group[i], i))  # tokens sorted by group
    rep = torch.tensor(order, device=device).expand(B, N)  # (B, T) grid index of each current token
    sums = keys.float().gather(1, rep[..., None].expand(B, N, D))  # (B, T, D) size-weighted key sums
    sizes = sums.new_ones(B, N)
    assign = torch.empty_like(rep).scatter_(1, rep, torch.arange(N, device=device).expand(B, N))
    for plan in merge_rounds(group_sizes(group, len(keep)), keep):
        T = rep.shape[1]
        a_idx, b_idx = torch.tensor(plan.a_index, device=device), torch.tensor(plan.b_index, device=device)
        a_group, b_group = torch.tensor(plan.a_group, device=device), torch.tensor(plan.b_group, device=device)
        unit = F.normalize(sums, dim=-1)
        sim = unit[:, a_idx] @ unit[:, b_idx].transpose(1, 2)  # (B, TA, TB) cosine of mean keys
        sim = sim.masked_fill(a_group[:, None] != b_group[None, :], float("-inf"))
        best, dest = sim.max(-1)  # (B, TA)

        # In each group the planned number of most similar A tokens merge. A tokens are already
        # sorted by group, so sorting by score and then stably by group ranks them.
        by_score = torch.sort(best, dim=-1, descending=True, stable=True).indices
        ranked = by_score.gather(1, torch.sort(a_group[by_score], dim=-1, stable=True).indices)
        take = (torch.tensor(plan.a_rank, device=device) < torch.tensor(plan.a_limit, device=device)).expand(B, -1)
        merged = torch.zeros_like(take).scatter_(1, ranked, take)  # (B, TA)

        target = torch.where(merged, b_idx[dest], a_idx)  # (B, TA) where each A token goes
        sums = sums.scatter_add(1, target[..., None].expand(-1, -1, D), sums[:, a_idx] * merged[..., None])
        sizes = sizes.scatter_add(1, target, sizes[:, a_idx] * merged)
        moved = torch.arange(T, device=device).expand(B, T).scatter(1, a_idx.expand(B, -1), target)
        survives = torch.ones(B, T, dtype=torch.bool, device=device).scatter(1, a_idx.expand(B, -1), ~merged)
        # (B, T') survivors in their order (still sorted by group): a stable sort puts them first.
        kept = torch.sort((~survives).to(torch.uint8), dim=1, stable=True).indices[:, : plan.survivors]
        new_index = torch.full((B, T), -1, dtype=torch.long, device=device).scatter(
            1, kept, torch.arange(plan.survivors, device=device).expand(B, -1))
        assign = new_index.gather(1, moved.gather(1, assign))
        sums = sums.gather(1, kept[..., None].expand(-1, -1, D))
        sizes, rep = sizes.gather(1, kept), rep.gather(1, kept)
    return Clusters(anchors=rep, assign=assign)


def group_sizes(group: Sequence[int], num_groups: int) -> List[int]:
    """Tokens in each of ``num_groups`` groups, in one pass over ``group``."""
    sizes = [0] * num_groups
    for g in group:
        sizes[g] += 1
    return sizes


def _shares(counts: List[int], total: int) -> List[int]:
    """Split ``total`` over groups in proportion to ``counts`` (largest remainder), each in [1, count]."""
    exact = [c * total / sum(counts) for c in counts]
    share = [min(max(1, math.floor(e)), c) for e, c in zip(exact, counts)]
    left = total - sum(share)
    if left > 0:
        remainder = [e - math.floor(e) if s < c else -1.0 for e, s, c in zip(exact, share, counts)]
        for g in sorted(range(len(counts)), key=lambda g: -remainder[g])[:left]:  # stable: ties by index
            share[g] += 1
    return share


def tome_reducer(inp: ClusteringInput) -> Clusters:
    B, H, W, D = inp.keys.shape
    return bipartite_merge(inp.keys.reshape(B, H * W, D), [0] * (H * W), [inp.num_clusters])


def tome_window_reducer(inp: ClusteringInput) -> Clusters:
    B, H, W, D = inp.keys.shape
    group = window_id_list((H, W), inp.window_size or max(H, W))
    keep = _shares(group_sizes(group, max(group) + 1), inp.num_clusters)
    return bipartite_merge(inp.keys.reshape(B, H * W, D), group, keep)
