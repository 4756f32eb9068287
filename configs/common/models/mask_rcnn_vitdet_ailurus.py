# ViTDet's Mask R-CNN (Detectron2 model zoo) with the AiluRus backbone. Same parameter names as
# ViTDet, so its checkpoints and MAE weights load unchanged; AiluRus knobs live on backbone.net.
from detectron2 import model_zoo

from ailurus import AiluRusRCNN, AiluRusSimpleFeaturePyramid, AiluRusViT


def use_ailurus(model, cluster_layer=3):
    """Switch a ViTDet Mask R-CNN config (GeneralizedRCNN, SimpleFeaturePyramid over ViT) to AiluRus,
    in place. The meta-architecture becomes AiluRusRCNN, which checks its input images."""
    model._target_ = AiluRusRCNN
    backbone = model.backbone
    backbone._target_ = AiluRusSimpleFeaturePyramid
    backbone.net._target_ = AiluRusViT
    backbone.net.update(
        enabled=True,
        cluster_layer=cluster_layer,
        keep_ratio=0.5,
        num_clusters=None,
        knn_k=5,
        radius=3,
        assign_radius=4,
        score="delta",
        unfold=None,  # the reducer's own: residual (reconstruct for expedite)
        reducer="ailurus",
        budget="fixed",  # or "adaptive": per-image token count from content (reducer ailurus)
        budget_threshold=0.1,
        min_keep=0.1,
        max_keep=1.0,
        check_finite=True,
    )


model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
use_ailurus(model)
