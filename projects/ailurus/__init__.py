"""AiluRus token clustering for ViTDet (Detectron2)."""
import warnings

# Deprecation notices from Detectron2's and timm's own imports, not actionable for our users.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message="Importing from timm.models.layers is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message="torch.meshgrid: in an upcoming release", category=UserWarning)

from .clustering import Clusters, cluster_tokens
from .pyramid import AiluRusSimpleFeaturePyramid
from .rcnn import AiluRusRCNN
from .reduced import ReducedState, merge, unfold
from .vit import AiluRusViT, NonFiniteImage
from . import build  # noqa: F401  registers the backbone builder

__all__ = ["AiluRusRCNN", "AiluRusViT", "NonFiniteImage", "AiluRusSimpleFeaturePyramid", "Clusters", "ReducedState", "cluster_tokens", "merge", "unfold"]
