"""AiluRus: spatial-aware density-peak clustering (``ailurus.clustering``)."""
from ..clustering import Clusters, cluster_tokens
from . import ReduceInput


def density_peak_reducer(inp: ReduceInput) -> Clusters:
    return cluster_tokens(
        inp.x, inp.num_clusters, knn_k=inp.knn_k, radius=inp.radius, assign_radius=inp.assign_radius,
        is_pad=inp.is_pad, score=inp.score, adaptive=inp.adaptive,
        window_size=inp.window_size if inp.confine_windows else 0,
    )
