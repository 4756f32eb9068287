"""AiluRus: spatial-aware density-peak clustering (``ailurus.clustering``)."""
from ..clustering import AdaptiveBudget, Clusters, cluster_tokens
from .base import ClusteringInput


def density_peak_reducer(inp: ClusteringInput) -> Clusters:
    s = inp.settings
    adaptive = AdaptiveBudget(s.budget_threshold, s.min_keep, s.max_keep) if s.budget == "adaptive" else None
    return cluster_tokens(
        inp.x, inp.num_clusters, knn_k=s.knn_k, radius=s.radius, assign_radius=s.assign_radius,
        is_pad=inp.is_pad, score=s.score, adaptive=adaptive,
        window_size=inp.window_size if s.confine_windows else 0, single_share=s.single_share,
        position_weight=s.position_weight, region_balance=s.region_balance,
    )
