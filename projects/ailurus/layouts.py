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

from .clustering import window_ids
from .tokens import TokenState, grid_state


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
    slot_weight: (S, P) share of its token's cells a slot stands for: a token's output is the sum of
        its slots' outputs times their weights (1 for a token in one slot, 0 for empty slots);
        tokens in no slot (empty tokens of an adaptive budget) read zeros.
    rows, cols: (S, P) position of the slot in the rel-pos frame (window-local or grid): its token's,
        or for a cluster's slot in a window other than its anchor's, the rounded mean of its cells there.
    extent: (rows, cols) of that frame; rel-pos tables are resized to 2 * extent - 1 entries.
    key_code: (S, 1, K, rows + cols + 1 + n_pad) key side of the logits bias, K = P + n_pad keys:
        one-hot row, one-hot col, log(cells the slot stands for) (a large negative for empty
        slots), and for the pad key a last column of 1. The query side (rel-pos terms, 1, pad
        term) times its transpose gives every bias in one matrix product, without gathering a
        (P, P) index.
    pad: Detectron2's padding keys of window layouts (n_pad = 1), or None (n_pad = 0).
    """

    slot_token: torch.Tensor
    slot_weight: torch.Tensor
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
        slot_weight=torch.ones(B, M, dtype=state.sizes.dtype, device=device),
        rows=rows,
        cols=cols,
        extent=state.grid_hw,
        key_code=_key_code(rows, cols, state.grid_hw, state.sizes.log(), with_pad=False),
        pad=None,
    )


def window_layout(state: TokenState, window_size: int, span_windows: bool = True) -> AttentionLayout:
    """Group tokens by window (no loop over windows).

    A slot is a (token, window) pair that stands for some of the token's grid cells. Without
    ``span_windows`` a token has one slot, in the window of its position (a cluster's anchor),
    standing for all its cells. With it, a cluster has a slot in every window that holds any of its
    cells, standing for those cells: there it is a key weighted by log(its cells in the window), and
    its output is the mean of its slots' outputs weighted by their cells. So a cluster of identical
    tokens attends and is attended to as its cells would be on the grid, wherever they lie.
    """
    B, M, _ = state.positions.shape
    H, W = state.grid_hw
    N, ws = H * W, window_size
    device = state.positions.device
    nwh, nww = math.ceil(H / ws), math.ceil(W / ws)
    S = B * nwh * nww
    rows, cols = state.positions[..., 0].reshape(-1), state.positions[..., 1].reshape(-1)  # (B*M,)
    token_window = (rows // ws) * nww + cols // ws
    cell_rows, cell_cols = grid_state(1, (H, W), device).positions[0].unbind(-1)  # (N,) each
    batch = torch.arange(B, device=device)[:, None]
    token = batch * M + (torch.arange(N, device=device) if state.is_grid else state.assign)  # (B, N) of each cell
    window = window_ids((H, W), ws, device) if span_windows else token_window[token]
    group = batch * (nwh * nww) + window  # (B, N)

    # Cells sorted by (group, token): each run of equal keys is one slot. At most B*N runs, a bound
    # known before any value is, so no shape depends on the data.
    key, order = (group * (B * M) + token).reshape(-1).sort()
    starts_run = torch.cat([key.new_ones(1, dtype=torch.bool), key[1:] != key[:-1]])
    run = starts_run.long().cumsum(0) - 1  # (B*N,) run of each sorted cell
    cells = torch.zeros(B * N, device=device).scatter_add(0, run, torch.ones(B * N, device=device))  # exact in fp32
    run_key = torch.zeros_like(key).scatter(0, run, key)
    used = cells > 0
    run_group = torch.where(used, run_key // (B * M), S)
    run_token = run_key % (B * M)
    # Runs are sorted by group, so a run's slot in its group is its rank after the group's first.
    per_group = torch.zeros(S + 1, dtype=torch.long, device=device).scatter_add(0, run_group, used.long())
    slot = torch.arange(B * N, device=device) - (per_group.cumsum(0) - per_group)[run_group]
    # A window's slots are no more than its cells: spanning, each slot holds one of them; otherwise
    # each is a token positioned there, and tokens sit on distinct cells. So P slots suffice.
    P = min(M, min(ws, H) * min(ws, W))
    flat_slot = torch.where(used, run_group * P + slot, S * P)  # unused runs: one spare slot

    empty = B * M
    slot_token = torch.full((S * P + 1,), empty, dtype=torch.long, device=device).scatter(0, flat_slot, run_token)[:-1]
    slot_cells = torch.zeros(S * P + 1, dtype=cells.dtype, device=device).scatter(0, flat_slot, cells)[:-1]
    filled = slot_token != empty
    source = torch.where(filled, slot_token, 0)  # geometry of empty slots is never used
    sizes = state.sizes.reshape(-1)[source].float().clamp(min=1)
    slot_weight = torch.where(filled, slot_cells / sizes, 0).reshape(S, P).to(state.sizes.dtype)
    key_bias = torch.where(filled, slot_cells.clamp(min=1).log(), masked_value(cells.dtype)).reshape(S, P)

    # A slot sits at its token's position when that lies in the slot's window, else at the rounded
    # mean of the cells it stands for (inside the window, which is a rectangle).
    cell_of = order % N
    sums = torch.zeros(B * N, 2, dtype=torch.long, device=device).scatter_add(
        0, run[:, None].expand(-1, 2), torch.stack([cell_rows[cell_of], cell_cols[cell_of]], -1))
    count = cells.long().clamp(min=1)[:, None]
    mean = (2 * sums + count) // (2 * count)
    slot_mean = torch.zeros(S * P + 1, 2, dtype=torch.long, device=device).scatter(
        0, flat_slot[:, None].expand(-1, 2), mean)[:-1]
    at_token = token_window[source] == torch.arange(S, device=device).repeat_interleave(P) % (nwh * nww)
    slot_rows = torch.where(at_token, rows[source], slot_mean[:, 0]).reshape(S, P)
    slot_cols = torch.where(at_token, cols[source], slot_mean[:, 1]).reshape(S, P)
    slot_token = slot_token.reshape(S, P)
    local_rows, local_cols = slot_rows % ws, slot_cols % ws

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
        slot_weight=slot_weight,
        rows=local_rows,
        cols=local_cols,
        extent=(ws, ws),
        key_code=_key_code(local_rows, local_cols, (ws, ws), key_bias, with_pad=pad is not None),
        pad=pad,
    )
