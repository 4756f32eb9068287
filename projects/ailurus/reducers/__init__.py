"""Token reducers: how the grid tokens at ``cluster_layer`` become the M tokens of the later blocks.

A reducer is a function from a block's output (``ReduceInput``) to a ``Clusters`` assignment:
anchors (where each reduced token sits on the grid) and the cluster of every grid token. Merging
(size-weighted means), attention over the reduced tokens (real-coordinate relative positions,
proportional attention, Detectron2's pad keys) and unfolding are shared by all of them
(``ailurus.reduced``), so between reducers only the choice of clusters differs. Adding one adds a
file here and an entry in ``REDUCERS``.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from ..clustering import AdaptiveBudget, Clusters, ScoreMode
from ..reduced import UnfoldMode


@dataclass(frozen=True)
class ReduceInput:
    """What a reducer sees of one forward pass.

    x: (B, H, W, C) output of block ``cluster_layer - 1``.
    num_clusters: M, the number of reduced tokens per image asked for.
    is_pad: (B, H, W) True for tokens of Detectron2's zero padding.
    window_size: window of the blocks after clustering (0 when they are all global).
    keys: (B, H, W, D) attention keys of block ``cluster_layer`` (mean over heads) when the reducer
        needs them (``Reducer.needs_keys``), else None.
    knn_k, radius, assign_radius, score: the density-peak knobs (used by ``ailurus`` only).
    adaptive: a per-image budget from content instead of ``num_clusters`` (reducers with
        ``Reducer.adaptive`` only), or None.
    confine_windows: keep every cluster inside one window of ``window_size`` (``ailurus`` only).
    """

    x: torch.Tensor
    num_clusters: int
    is_pad: torch.Tensor
    window_size: int = 0
    keys: Optional[torch.Tensor] = None
    knn_k: int = 5
    radius: int = 3
    assign_radius: int = 4
    score: ScoreMode = "delta"
    adaptive: Optional[AdaptiveBudget] = None
    confine_windows: bool = False


@dataclass(frozen=True)
class Reducer:
    """cluster: the reducer; needs_keys: it reads ``ReduceInput.keys``; unfold: its own unfold,
    used when the backbone's ``unfold`` is None; adaptive: it supports a per-image budget."""

    cluster: Callable[[ReduceInput], Clusters]
    needs_keys: bool = False
    unfold: UnfoldMode = "residual"
    adaptive: bool = False


def _registry() -> Dict[str, Reducer]:
    from .ailurus import density_peak_reducer
    from .expedite import expedite_reducer
    from .pool import pool_reducer
    from .tome import tome_reducer, tome_window_reducer

    return {
        "ailurus": Reducer(density_peak_reducer, adaptive=True),
        "tome": Reducer(tome_reducer, needs_keys=True),
        "tome_window": Reducer(tome_window_reducer, needs_keys=True),
        "expedite": Reducer(expedite_reducer, unfold="reconstruct"),
        "pool": Reducer(pool_reducer),
    }


REDUCERS: Dict[str, Reducer] = _registry()

__all__ = ["REDUCERS", "ReduceInput", "Reducer"]
