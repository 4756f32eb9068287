"""Regular cells on the token grid: the clusters of ``pool`` and the starting point of ``expedite``."""
import math
from dataclasses import dataclass
from typing import Tuple

import torch


@dataclass(frozen=True)
class Cells:
    """A partition of the (H, W) grid into rectangular cells, none crossing a window border.

    cell: (N,) cell index of every grid token (row-major cells).
    anchors: (M,) flat grid index of each cell's centre token (inside the cell).
    shape: (rows, cols) of the cell grid.
    window: (M,) window index of each cell.
    """

    cell: torch.Tensor
    anchors: torch.Tensor
    shape: Tuple[int, int]
    window: torch.Tensor


def _axis(length: int, window: int, scale: float, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split each window-long segment of one axis into max(1, round(segment * scale)) near-equal parts.

    Returns:
        part: (length,) part index of every position; centre: (parts,) the middle position of each part.
    """
    parts, centres = [], []
    for start in range(0, length, window):
        seg = min(window, length - start)
        n = min(seg, max(1, math.floor(seg * scale + 0.5)))
        offset = len(centres)
        parts += [offset + (p * n) // seg for p in range(seg)]
        centres += [start + math.floor((j + 0.5) * seg / n) for j in range(n)]
    return torch.tensor(parts, device=device), torch.tensor(centres, device=device)


def regular_cells(hw: Tuple[int, int], num_cells: int, window: int, device: torch.device) -> Cells:
    """About ``num_cells`` cells of equal shape: each window (the whole grid for ``window=0``) of
    each axis is split into round(side * sqrt(num_cells / N)) parts, so the count is the nearest a
    regular grid gets to ``num_cells`` (exact when N and num_cells are squares of a divisor)."""
    H, W = hw
    scale = math.sqrt(num_cells / (H * W))
    wh, ww = (window, window) if window > 0 else (H, W)
    row_part, row_centre = _axis(H, wh, scale, device)
    col_part, col_centre = _axis(W, ww, scale, device)
    nr, nc = len(row_centre), len(col_centre)
    cell = (row_part[:, None] * nc + col_part[None, :]).reshape(-1)
    anchors = (row_centre[:, None] * W + col_centre[None, :]).reshape(-1)
    nww = math.ceil(W / ww)
    window_index = ((row_centre // wh)[:, None] * nww + (col_centre // ww)[None, :]).reshape(-1)
    return Cells(cell=cell, anchors=anchors, shape=(nr, nc), window=window_index)
