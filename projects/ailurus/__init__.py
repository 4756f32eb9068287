"""AiluRus token clustering for ViTDet (Detectron2): the model.

The experiment and measurement tools (study, benchmark, demo, visualisation, weight conversion)
are in ``ailurus.experiments``, which this package never imports.
"""
import warnings

# Deprecation notices from Detectron2's and timm's own imports, not actionable for our users.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message="Importing from timm.models.layers is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message="torch.meshgrid: in an upcoming release", category=UserWarning)

from .clustering import Clusters, cluster_tokens
from .config import add_ailurus_config, build_ailurus_vitdet_backbone, use_ailurus  # registers the yacs builder
from .pyramid import AiluRusSimpleFeaturePyramid
from .rcnn import AiluRusRCNN
from .settings import AiluRusSettings
from .tokens import TokenState, merge, unfold
from .vit import AiluRusViT, NonFiniteImage

__all__ = [
    "AiluRusRCNN", "AiluRusSettings", "AiluRusSimpleFeaturePyramid", "AiluRusViT", "Clusters", "NonFiniteImage",
    "TokenState", "add_ailurus_config", "build_ailurus_vitdet_backbone", "cluster_tokens", "merge", "unfold",
    "use_ailurus",
]
