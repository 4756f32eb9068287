"""Expedite-style clustering (Liang et al., NeurIPS 2022): per-window soft k-means from a regular grid.

Every window is split into a smaller regular grid of cells (``regular_cells``); cell centres start
as the cell means and are refined by a few soft k-means steps in which a token is shared, by a
softmax over cosine similarity, among the centres of its own and the 8 surrounding cells of the
same window (the paper's locality mask). The clusters are the final hard assignment (each cell
keeps its centre token), merged like every other reducer's; the paper's own unfold, a soft top-k
reconstruction, is ``unfold="reconstruct"`` (``ailurus.tokens``). Where the paper resizes the
relative-position tables to the smaller grid, the shared attention uses each cluster's real
position instead.
"""
import torch
import torch.nn.functional as F

from ..clustering import Clusters
from ..tokens import segment_sum
from .base import ClusteringInput
from .cells import regular_cells

ITERATIONS = 5
TEMPERATURE = 0.05  # of the softmax over cosine similarities


def _candidates(cell: torch.Tensor, shape, window: torch.Tensor):
    """(N, 9) cells around each token's cell (3 x 3 on the cell grid) and (N, 9) whether each exists
    and lies in the token's window."""
    nr, nc = shape
    r, c = cell // nc, cell % nc
    dr = torch.tensor([-1, -1, -1, 0, 0, 0, 1, 1, 1], device=cell.device)
    dc = torch.tensor([-1, 0, 1, -1, 0, 1, -1, 0, 1], device=cell.device)
    rr, cc = r[:, None] + dr, c[:, None] + dc
    inside = (rr >= 0) & (rr < nr) & (cc >= 0) & (cc < nc)
    index = rr.clamp(0, nr - 1) * nc + cc.clamp(0, nc - 1)
    return index, inside & (window[index] == window[cell][:, None])


@torch.no_grad()
def expedite_reducer(inp: ClusteringInput) -> Clusters:
    B, H, W, C = inp.x.shape
    N = H * W
    cells = regular_cells((H, W), inp.num_clusters, inp.window_size, inp.x.device)
    M = cells.anchors.numel()
    index, ok = _candidates(cells.cell, cells.shape, cells.window)
    with torch.autocast(device_type=inp.x.device.type, enabled=False):
        f = F.normalize(inp.x.float().reshape(B, N, C), dim=-1)
        weights = (index == cells.cell[:, None]).float().expand(B, N, 9)  # start: each token in its cell
        for step in range(ITERATIONS + 1):
            # One (B, N, C) pass per neighbouring cell: never a (B, N, 9, C) tensor.
            sums = sum(segment_sum(f * weights[..., k : k + 1], index[:, k], M) for k in range(9))
            centres = F.normalize(sums, dim=-1)
            sim = torch.stack([(f * centres[:, index[:, k]]).sum(-1) for k in range(9)], -1)
            logits = (sim / TEMPERATURE).masked_fill(~ok, float("-inf"))
            if step < ITERATIONS:
                weights = logits.softmax(-1)
    assign = index.expand(B, N, 9).gather(2, logits.argmax(-1, keepdim=True)).squeeze(2)
    anchors = cells.anchors.expand(B, M)
    rank = torch.arange(M, device=inp.x.device).expand(B, M)
    return Clusters(anchors=anchors, assign=assign.scatter(1, anchors, rank))
