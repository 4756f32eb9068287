"""Builder in Detectron2's ``BACKBONE_REGISTRY`` for users of yacs configs.

    from detectron2.config import get_cfg
    from ailurus.build import add_ailurus_config
    cfg = get_cfg(); add_ailurus_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_ailurus_vitdet_backbone"
"""
from functools import partial

import torch.nn as nn
from detectron2.config import CfgNode as CN
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from .pyramid import AiluRusSimpleFeaturePyramid
from .vit import AiluRusViT

__all__ = ["add_ailurus_config", "build_ailurus_vitdet_backbone"]


# AiluRus knobs under cfg.MODEL.AILURUS (upper case), with their defaults; yacs has no None, so
# UNFOLD "" stands for the reducer's own unfold.
YACS_KNOBS = dict(
    enabled=True, cluster_layer=3, keep_ratio=0.5, knn_k=5, radius=3, assign_radius=4, score="delta", unfold="",
    reducer="ailurus", budget="fixed", budget_threshold=0.1, min_keep=0.1, max_keep=1.0, confine_windows=False,
    check_finite=True,
)


def add_ailurus_config(cfg: CN) -> None:
    """Add ``MODEL.VIT`` (ViTDet-B defaults) and ``MODEL.AILURUS`` to a yacs config."""
    cfg.MODEL.VIT = CN()
    cfg.MODEL.VIT.IMG_SIZE = 1024
    cfg.MODEL.VIT.PATCH_SIZE = 16
    cfg.MODEL.VIT.EMBED_DIM = 768
    cfg.MODEL.VIT.DEPTH = 12
    cfg.MODEL.VIT.NUM_HEADS = 12
    cfg.MODEL.VIT.DROP_PATH_RATE = 0.1
    cfg.MODEL.VIT.WINDOW_SIZE = 14
    cfg.MODEL.VIT.WINDOW_BLOCK_INDEXES = [0, 1, 3, 4, 6, 7, 9, 10]
    cfg.MODEL.VIT.OUT_CHANNELS = 256
    cfg.MODEL.VIT.SQUARE_PAD = 1024
    cfg.MODEL.VIT.USE_ACT_CHECKPOINT = False
    cfg.MODEL.AILURUS = CN({knob.upper(): value for knob, value in YACS_KNOBS.items()})


@BACKBONE_REGISTRY.register()
def build_ailurus_vitdet_backbone(cfg: CN, input_shape: ShapeSpec) -> AiluRusSimpleFeaturePyramid:
    vit, ail = cfg.MODEL.VIT, cfg.MODEL.AILURUS
    knobs = {knob: ail[knob.upper()] for knob in YACS_KNOBS}
    knobs["unfold"] = knobs["unfold"] or None
    net = AiluRusViT(
        img_size=vit.IMG_SIZE,
        patch_size=vit.PATCH_SIZE,
        in_chans=input_shape.channels,
        embed_dim=vit.EMBED_DIM,
        depth=vit.DEPTH,
        num_heads=vit.NUM_HEADS,
        drop_path_rate=vit.DROP_PATH_RATE,
        window_size=vit.WINDOW_SIZE,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        window_block_indexes=list(vit.WINDOW_BLOCK_INDEXES),
        use_rel_pos=True,
        out_feature="last_feat",
        use_act_checkpoint=vit.USE_ACT_CHECKPOINT,
        **knobs,
    )
    return AiluRusSimpleFeaturePyramid(
        net=net,
        in_feature="last_feat",
        out_channels=vit.OUT_CHANNELS,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        top_block=LastLevelMaxPool(),
        norm="LN",
        square_pad=vit.SQUARE_PAD,
    )
