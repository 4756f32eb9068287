"""The per-forward token state (``TokenState``), merge and unfold (docs/method.md, "Merge and unfold").

Tokens are kept compact as (B, M, C). Before clustering they are the grid itself (M = N = H*W,
row-major, size 1); after it, one token per cluster at its anchor's grid position.
"""
import math
from dataclasses import dataclass
from typing import Literal, Optional, Tuple

import torch
import torch.nn.functional as F

from .clustering import Clusters

UnfoldMode = Literal["copy", "residual", "reconstruct", "soft_residual"]
SOFT_UNFOLDS = ("reconstruct", "soft_residual")

# The soft unfolds: clusters each grid position draws from, and the temperature of the softmax over
# their cosine similarities, per mode. ``reconstruct`` is Expedite's (4, 0.05); ``soft_residual``
# keeps more clusters at a higher temperature (docs/method.md, "Merge and unfold").
UNFOLD_TOPK = {"reconstruct": 4, "soft_residual": 8}
UNFOLD_TEMPERATURE = {"reconstruct": 0.05, "soft_residual": 0.1}


@dataclass(frozen=True)
class TokenState:
    """Geometry of the current token set of a forward pass.

    grid_hw: (H, W) of the full token grid.
    positions: (B, M, 2) (row, col) of each token; for a cluster, its anchor's.
    sizes: (B, M) number of grid tokens each token stands for; 0 for the empty slots of images
        with fewer tokens than the batch's largest (adaptive budget).
    assign: (B, N) token index of every grid position; None while tokens are still the grid.
    pre_merge: (B, N, C) grid features at the clustering layer (residual unfold), or None.
    merged: (B, M, C) cluster features right after merging (residual unfold), or None.
    """

    grid_hw: Tuple[int, int]
    positions: torch.Tensor
    sizes: torch.Tensor
    assign: Optional[torch.Tensor] = None
    pre_merge: Optional[torch.Tensor] = None
    merged: Optional[torch.Tensor] = None

    @property
    def is_grid(self) -> bool:
        return self.assign is None

    @property
    def tokens_per_image(self) -> torch.Tensor:
        """(B,) tokens each image really holds (empty slots not counted)."""
        return (self.sizes > 0).sum(1)


def grid_state(batch: int, hw: Tuple[int, int], device: torch.device) -> TokenState:
    """State of an unreduced (B, H*W) token grid: every token at its own position, size 1."""
    H, W = hw
    rows = torch.arange(H, device=device).repeat_interleave(W)
    cols = torch.arange(W, device=device).repeat(H)
    positions = torch.stack([rows, cols], -1).expand(batch, -1, -1)
    sizes = torch.ones(batch, H * W, device=device)
    return TokenState(grid_hw=hw, positions=positions, sizes=sizes)


def segment_sum(values: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Sums of the rows of ``values`` that share an index.

    A ``scatter_add``: ``index_add`` exports to ONNX through TorchScript as a scatter that keeps
    one of the rows sharing an index instead of their sum.

    Args:
        values: (B, N, C).
        index: (B, N) or (N,) segment of each row, in [0, num_segments).
    Returns:
        (B, num_segments, C).
    """
    B, N, C = values.shape
    return values.new_zeros(B, num_segments, C).scatter_add(1, index.expand(B, N)[..., None].expand(B, N, C), values)


def merge(x: torch.Tensor, clusters: Clusters, hw: Tuple[int, int]) -> Tuple[torch.Tensor, TokenState]:
    """Average the grid tokens of each cluster.

    Args:
        x: (B, N, C) grid tokens (row-major).
        clusters: anchors (B, M) and assignment (B, N).
        hw: grid size (H, W).
    Returns:
        (B, M, C) cluster means and the reduced state.
    """
    B, N, C = x.shape
    M = clusters.anchors.shape[1]
    sums = segment_sum(x, clusters.assign, M)
    # Counted in fp32 (exact) with a static shape, unlike bincount's, then in the tokens' dtype.
    sizes = segment_sum(torch.ones(B, N, 1, device=x.device), clusters.assign, M)[..., 0].to(x.dtype)
    merged = sums / sizes.clamp(min=1)[..., None]  # empty slots (size 0) stay zero
    W = hw[1]
    positions = torch.stack([clusters.anchors // W, clusters.anchors % W], -1)
    state = TokenState(
        grid_hw=hw, positions=positions, sizes=sizes, assign=clusters.assign, pre_merge=x, merged=merged
    )
    return merged, state


def unfold(
    tokens: torch.Tensor, state: TokenState, mode: UnfoldMode, topk: Optional[int] = None,
    temperature: Optional[float] = None,
) -> torch.Tensor:
    """Put tokens back on the grid.

    Two choices make the four modes. What grid position i reads: its own cluster (``copy``,
    ``residual``), or a mix sum_j w_ij of the ``topk`` clusters j whose merged features are most
    similar (cosine) to its own pre-merge feature, w a softmax of those similarities over
    ``temperature`` (``reconstruct``, Expedite's, and ``soft_residual``). And what it reads: the
    clusters' outputs, or (the residual modes) the change each cluster went through, added to its
    own pre-merge feature:

    - ``copy``: grid_i = tokens[assign_i];
    - ``residual``: grid_i = pre_merge_i + (tokens - merged)[assign_i];
    - ``reconstruct``: grid_i = sum_j w_ij tokens_j;
    - ``soft_residual``: grid_i = pre_merge_i + sum_j w_ij (tokens - merged)_j.

    Args:
        tokens: (B, M, C).
        topk, temperature: of the soft modes; None: the mode's own (``UNFOLD_TOPK``, ``UNFOLD_TEMPERATURE``).
    Returns:
        (B, H, W, C).
    """
    H, W = state.grid_hw
    B, M, C = tokens.shape
    if state.is_grid:
        return tokens.reshape(B, H, W, C)
    residual = mode in ("residual", "soft_residual")
    values = tokens - state.merged if residual else tokens
    if mode in SOFT_UNFOLDS:
        weights, index = reconstruction_weights(
            state.pre_merge, state.merged, state.sizes > 0, topk or UNFOLD_TOPK[mode],
            temperature or UNFOLD_TEMPERATURE[mode])
        grid = (weights.to(values.dtype)[..., None] * take_rows(values, index)).sum(2)
    else:
        grid = take_rows(values, state.assign)
    if residual:
        grid = grid + state.pre_merge
    return grid.reshape(B, H, W, C)


def take_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of each image's ``values`` by ``index``: ``out[b, ...] = values[b, index[b, ...]]``.

    One ``index_select`` over the batch's flattened rows: it copies whole rows, 5x faster on CPUs
    than ``gather`` with an expanded index or advanced indexing.

    Args:
        values: (B, M, C); index: (B, ...) in [0, M).
    Returns:
        (B, ..., C).
    """
    B, M, C = values.shape
    offset = M * torch.arange(B, device=values.device).reshape(B, *[1] * (index.dim() - 1))
    return values.reshape(B * M, C).index_select(0, (index + offset).reshape(-1)).reshape(*index.shape, C)


@torch.no_grad()
def reconstruction_weights(
    pre_merge: torch.Tensor, merged: torch.Tensor, filled: torch.Tensor, topk: int, temperature: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, N, k) softmax weights and (B, N, k) indices of the k clusters most similar to each position.

    Args:
        pre_merge: (B, N, C) grid features at clustering; merged: (B, M, C) cluster features then;
        filled: (B, M) False for empty slots, which are never picked.
    """
    with torch.autocast(device_type=merged.device.type, enabled=False):
        sim = F.normalize(pre_merge.float(), dim=-1) @ F.normalize(merged.float(), dim=-1).transpose(1, 2)
        sim = sim.masked_fill(~filled[:, None], -math.inf)
        # Every image holds at least one cluster, so each softmax has a finite entry; picks of empty
        # slots (fewer filled than k) get weight 0.
        top = sim.topk(min(topk, merged.shape[1]), dim=-1)
        return (top.values / temperature).softmax(-1), top.indices
