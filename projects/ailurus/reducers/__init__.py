"""Token reducers: how the grid tokens at ``cluster_layer`` become the M tokens of the later blocks.

A reducer is a function from a block's output (``ClusteringInput``) to a ``Clusters`` assignment:
anchors (where each reduced token sits on the grid) and the cluster of every grid token. Merging
(size-weighted means), attention over the reduced tokens (real-coordinate relative positions,
proportional attention, Detectron2's pad keys) and unfolding are shared by all of them
(``ailurus.tokens``, ``ailurus.layouts``), so between reducers only the choice of clusters differs. Adding one adds a
file here and an entry in ``REDUCERS``.
"""
from typing import Dict

from .base import ClusteringInput, Reducer
from .density_peak import density_peak_reducer
from .expedite import expedite_reducer
from .pool import pool_reducer
from .tome import tome_reducer, tome_window_reducer

REDUCERS: Dict[str, Reducer] = {
    "ailurus": Reducer(density_peak_reducer, adaptive=True),
    "tome": Reducer(tome_reducer, needs_keys=True),
    "tome_window": Reducer(tome_window_reducer, needs_keys=True),
    "expedite": Reducer(expedite_reducer, unfold="reconstruct"),
    "pool": Reducer(pool_reducer),
}

__all__ = ["REDUCERS", "ClusteringInput", "Reducer"]
