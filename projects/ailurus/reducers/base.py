"""What every reducer takes and is: ``ClusteringInput`` and ``Reducer``."""
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..clustering import Clusters
from ..settings import AiluRusSettings
from ..tokens import UnfoldMode


@dataclass(frozen=True)
class ClusteringInput:
    """What a reducer sees of one forward pass.

    x: (B, H, W, C) output of block ``cluster_layer - 1``.
    num_clusters: M, the number of reduced tokens per image asked for.
    is_pad: (B, H, W) True for tokens of Detectron2's zero padding.
    window_size: window of the blocks after clustering (0 when they are all global).
    keys: (B, H, W, D) attention keys of block ``cluster_layer`` (mean over heads) when the reducer
        needs them (``Reducer.needs_keys``), else None.
    settings: the backbone's settings; the density-peak ones (``knn_k``, ``radius``,
        ``assign_radius``, ``score``, ``confine_windows``) and the adaptive budget are used by
        ``ailurus`` only.
    """

    x: torch.Tensor
    num_clusters: int
    is_pad: torch.Tensor
    window_size: int = 0
    keys: Optional[torch.Tensor] = None
    settings: AiluRusSettings = AiluRusSettings()


@dataclass(frozen=True)
class Reducer:
    """cluster: the reducer; needs_keys: it reads ``ClusteringInput.keys``; unfold: its own unfold,
    used when the backbone's ``unfold`` is None; adaptive: it supports a per-image budget."""

    cluster: Callable[[ClusteringInput], Clusters]
    needs_keys: bool = False
    unfold: UnfoldMode = "residual"
    adaptive: bool = False
