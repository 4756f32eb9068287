"""Attention layouts: tokens grouped into windows, or all of an image together (docs/method.md,
"Reduced attention").

The grouping depends only on token positions, which never change after clustering, so it is
built once per token set and reused by every block of that set.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .tokens import TokenState


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


def global_layout(state: TokenState) -> AttentionLayout:
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


def window_layout(state: TokenState, window_size: int) -> AttentionLayout:
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

    order = torch.sort(group, stable=True).indices  # the dropped group sorts last
    counts = torch.zeros(S + 1, dtype=torch.long, device=device).scatter_add_(0, group, torch.ones_like(group))
    # Token positions are distinct grid cells, so a window holds at most its cells: a bound known
    # before any value is, so no shape depends on the data (the grid's windows fill it exactly).
    P = min(M, min(ws, H) * min(ws, W))
    starts = counts.cumsum(0) - counts
    sorted_group = group[order]
    slot = torch.arange(B * M, device=device) - starts[sorted_group]
    flat_slot = torch.where(sorted_group < S, sorted_group * P + slot, S * P)  # dropped: one spare slot

    empty = B * M
    slot_token = torch.full((S * P + 1,), empty, dtype=torch.long, device=device).scatter(0, flat_slot, order)[:-1]
    token_slot = torch.full((B * M,), S * P, dtype=torch.long, device=device).scatter(0, order, flat_slot)
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
