"""The per-forward reduced token state: merge, unfold, and the attention layouts.

Tokens are kept compact as (B, M, C). Before clustering they are the grid itself (M = N = H*W,
row-major, size 1); after it, one token per cluster at its anchor's grid position. Attention
needs them grouped into windows (or all together, for global blocks); that grouping depends only
on positions, which never change after clustering, so it is built once per token set and reused
by every block (``AttentionLayout``).
"""
import math
from dataclasses import dataclass
from typing import Literal, Optional, Tuple

import torch
import torch.nn.functional as F

from .clustering import Clusters

UnfoldMode = Literal["copy", "residual", "reconstruct"]

# Soft reconstruction (``unfold="reconstruct"``): clusters each grid position draws from, and the
# temperature of the softmax over their cosine similarities.
RECONSTRUCT_TOPK = 4
RECONSTRUCT_TEMPERATURE = 0.05


@dataclass(frozen=True)
class ReducedState:
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


def grid_state(batch: int, hw: Tuple[int, int], device: torch.device) -> ReducedState:
    """State of an unreduced (B, H*W) token grid: every token at its own position, size 1."""
    H, W = hw
    rows = torch.arange(H, device=device).repeat_interleave(W)
    cols = torch.arange(W, device=device).repeat(H)
    positions = torch.stack([rows, cols], -1).expand(batch, -1, -1)
    sizes = torch.ones(batch, H * W, device=device)
    return ReducedState(grid_hw=hw, positions=positions, sizes=sizes)


def merge(x: torch.Tensor, clusters: Clusters, hw: Tuple[int, int]) -> Tuple[torch.Tensor, ReducedState]:
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
    flat = (clusters.assign + torch.arange(B, device=x.device)[:, None] * M).reshape(-1)
    sums = x.new_zeros(B * M, C).index_add_(0, flat, x.reshape(B * N, C))
    sizes = torch.bincount(flat, minlength=B * M).reshape(B, M).to(x.dtype)
    merged = sums.reshape(B, M, C) / sizes.clamp(min=1)[..., None]  # empty slots (size 0) stay zero
    W = hw[1]
    positions = torch.stack([clusters.anchors // W, clusters.anchors % W], -1)
    state = ReducedState(
        grid_hw=hw, positions=positions, sizes=sizes, assign=clusters.assign, pre_merge=x, merged=merged
    )
    return merged, state


def unfold(tokens: torch.Tensor, state: ReducedState, mode: UnfoldMode, topk: int = RECONSTRUCT_TOPK) -> torch.Tensor:
    """Put tokens back on the grid.

    ``copy``: grid_i = tokens[assign_i]. ``residual``: grid_i = pre_merge_i + (tokens - merged)[assign_i],
    i.e. each position keeps its own pre-merge detail plus the change its cluster went through.
    ``reconstruct`` (Expedite's): grid_i = sum_j w_ij tokens_j over the ``topk`` clusters j whose
    merged features are most similar (cosine) to position i's pre-merge feature, w a softmax of
    those similarities (``RECONSTRUCT_TEMPERATURE``).

    Args:
        tokens: (B, M, C).
    Returns:
        (B, H, W, C).
    """
    H, W = state.grid_hw
    B, M, C = tokens.shape
    if state.is_grid:
        return tokens.reshape(B, H, W, C)
    if mode == "reconstruct":
        weights, index = reconstruction_weights(state.pre_merge, state.merged, state.sizes > 0, topk)
        picked = tokens[torch.arange(B, device=tokens.device)[:, None, None], index]  # (B, N, k, C)
        return (weights.to(tokens.dtype)[..., None] * picked).sum(2).reshape(B, H, W, C)
    if mode == "residual":
        tokens = tokens - state.merged
    index = state.assign[..., None].expand(-1, -1, C)
    grid = tokens.gather(1, index)
    if mode == "residual":
        grid = grid + state.pre_merge
    return grid.reshape(B, H, W, C)


@torch.no_grad()
def reconstruction_weights(
    pre_merge: torch.Tensor, merged: torch.Tensor, filled: torch.Tensor, topk: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, N, k) softmax weights and (B, N, k) indices of the k clusters most similar to each position.

    Args:
        pre_merge: (B, N, C) grid features at clustering; merged: (B, M, C) cluster features then;
        filled: (B, M) False for empty slots, which are never picked.
    """
    with torch.autocast(device_type=merged.device.type, enabled=False):
        sim = F.normalize(pre_merge.float(), dim=-1) @ F.normalize(merged.float(), dim=-1).transpose(1, 2)
        sim = sim.masked_fill(~filled[:, None], -math.inf)
        top = sim.topk(min(topk, int(filled.sum(1).min())), dim=-1)
        return (top.values / RECONSTRUCT_TEMPERATURE).softmax(-1), top.indices


@dataclass(frozen=True)
class PadKeys:
    """Detectron2's zero padding of border windows, as one extra key per window.

    ``window_partition`` pads the grid with zero tokens after norm1 and attention does not mask
    them, so each pad position is a key with k and v equal to the qkv bias, at its own relative
    position. All pad keys of a window share k and v, so they collapse exactly into one key whose
    rel-pos term is the log-sum-exp of theirs; pad positions are (pad rows x all cols) plus
    (valid rows x pad cols), which factorises that sum per axis.

    pad_rows, pad_cols: (S, 1, 1, ws) True for the window-local rows / cols that are padding.
    """

    pad_rows: torch.Tensor
    pad_cols: torch.Tensor


@dataclass(frozen=True)
class AttentionLayout:
    """Tokens grouped into S attention groups of P slots (windows, or one group per image).

    slot_token: (S, P) index into the flattened (B*M) tokens; B*M for empty slots, which read an
        all-zero row appended after the tokens (never another token, so no value can leak).
    token_slot: (B*M,) index into the flattened (S*P) slots, to read results back; S*P for tokens
        in no group (empty tokens of an adaptive budget), which read an all-zero output row.
    rows, cols: (S, P) position of the slot's token in the rel-pos frame (window-local or grid).
    extent: (rows, cols) of that frame; rel-pos tables are resized to 2 * extent - 1 entries.
    key_code: (S, 1, K, rows + cols + 1 + n_pad) key side of the logits bias, K = P + n_pad keys:
        one-hot row, one-hot col, log(size) (a large negative for empty slots), and for the pad
        key a last column of 1. The query side (rel-pos terms, 1, pad term) times its transpose
        gives every bias in one matrix product, without gathering a (P, P) index.
    pad: Detectron2's padding keys of window layouts (n_pad = 1), or None (n_pad = 0).
    """

    slot_token: torch.Tensor
    token_slot: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    extent: Tuple[int, int]
    key_code: torch.Tensor
    pad: Optional[PadKeys]


def masked_value(dtype: torch.dtype) -> float:
    """Additive bias that removes a key; finite, so empty rows give no NaN and 0 * it is 0."""
    return torch.finfo(dtype).min / 4


def _key_code(
    rows: torch.Tensor, cols: torch.Tensor, extent: Tuple[int, int], key_bias: torch.Tensor, with_pad: bool
) -> torch.Tensor:
    """(S, 1, P + with_pad, extent_rows + extent_cols + 1 + with_pad); see ``AttentionLayout``."""
    code = torch.cat(
        [
            F.one_hot(rows, extent[0]).to(key_bias.dtype),
            F.one_hot(cols, extent[1]).to(key_bias.dtype),
            key_bias[..., None],
        ],
        dim=-1,
    )
    if with_pad:
        S, P, D = code.shape
        code = F.pad(code, (0, 1, 0, 1))
        code[:, P, D] = 1.0
    return code[:, None]


def global_layout(state: ReducedState) -> AttentionLayout:
    """All M tokens of an image attend to each other."""
    B, M, _ = state.positions.shape
    device = state.positions.device
    rows, cols = state.positions[..., 0], state.positions[..., 1]
    return AttentionLayout(
        slot_token=torch.arange(B * M, device=device).reshape(B, M),
        token_slot=torch.arange(B * M, device=device),
        rows=rows,
        cols=cols,
        extent=state.grid_hw,
        key_code=_key_code(rows, cols, state.grid_hw, state.sizes.log(), with_pad=False),
        pad=None,
    )


def window_layout(state: ReducedState, window_size: int) -> AttentionLayout:
    """Group tokens by the window that contains their position (no loop over windows)."""
    B, M, _ = state.positions.shape
    H, W = state.grid_hw
    ws = window_size
    device = state.positions.device
    nwh, nww = math.ceil(H / ws), math.ceil(W / ws)
    rows, cols = state.positions[..., 0], state.positions[..., 1]
    group = (rows // ws) * nww + cols // ws + torch.arange(B, device=device)[:, None] * (nwh * nww)
    S = B * nwh * nww
    # (B*M,) window of each token over the batch; empty tokens (size 0) go to a group S that is dropped.
    group = torch.where(state.sizes.reshape(-1) > 0, group.reshape(-1), S)

    order = torch.sort(group, stable=True).indices
    counts = torch.bincount(group, minlength=S + 1)[:S]
    P = max(1, int(counts.max()))
    starts = counts.cumsum(0) - counts
    n_filled = int(counts.sum())
    order = order[:n_filled]  # the dropped group sorts last
    sorted_group = group[order]
    slot = torch.arange(n_filled, device=device) - starts[sorted_group]
    flat_slot = sorted_group * P + slot

    empty = B * M
    slot_token = torch.full((S * P,), empty, dtype=torch.long, device=device).index_copy_(0, flat_slot, order)
    token_slot = torch.full((B * M,), S * P, dtype=torch.long, device=device).index_copy_(0, order, flat_slot)
    filled = slot_token != empty
    source = torch.where(filled, slot_token, 0).reshape(S, P)  # geometry of empty slots is never used
    log_sizes = state.sizes.reshape(-1).log()[source].reshape(-1)
    key_bias = torch.where(filled, log_sizes, masked_value(log_sizes.dtype)).reshape(S, P)

    slot_token = slot_token.reshape(S, P)
    local_rows = (rows % ws).reshape(-1)[source]
    local_cols = (cols % ws).reshape(-1)[source]

    pad = None
    if H % ws or W % ws:
        window = torch.arange(nwh * nww, device=device)
        valid_h = (H - (window // nww) * ws).clamp(max=ws)
        valid_w = (W - (window % nww) * ws).clamp(max=ws)
        local = torch.arange(ws, device=device)
        pad_rows = (local >= valid_h[:, None]).repeat(B, 1)[:, None, None, :]
        pad_cols = (local >= valid_w[:, None]).repeat(B, 1)[:, None, None, :]
        pad = PadKeys(pad_rows=pad_rows, pad_cols=pad_cols)

    return AttentionLayout(
        slot_token=slot_token,
        token_slot=token_slot,
        rows=local_rows,
        cols=local_cols,
        extent=(ws, ws),
        key_code=_key_code(local_rows, local_cols, (ws, ws), key_bias, with_pad=pad is not None),
        pad=pad,
    )
