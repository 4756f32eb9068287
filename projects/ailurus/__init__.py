"""AiluRus token clustering for ViTDet (Detectron2)."""
from .clustering import Clusters, cluster_tokens
from .pyramid import AiluRusSimpleFeaturePyramid
from .reduced import ReducedState, merge, unfold
from .vit import AiluRusViT
from . import build  # noqa: F401  registers the backbone builder

__all__ = ["AiluRusViT", "AiluRusSimpleFeaturePyramid", "Clusters", "ReducedState", "cluster_tokens", "merge", "unfold"]
