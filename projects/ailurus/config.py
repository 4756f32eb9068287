"""AiluRus in Detectron2's two config systems, both derived from ``ailurus.settings``.

LazyConfig: switch any ViTDet Mask R-CNN config to AiluRus with ``use_ailurus(cfg.model)``; the
settings then sit on ``model.backbone.net`` (``model.backbone.net.keep_ratio=0.4``).

yacs: the builder below is registered in Detectron2's ``BACKBONE_REGISTRY``::

    from detectron2.config import get_cfg
    from ailurus.config import add_ailurus_config
    cfg = get_cfg(); add_ailurus_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_ailurus_vitdet_backbone"
    cfg.MODEL.AILURUS.KEEP_RATIO = 0.4
"""
from functools import partial

import torch.nn as nn
from detectron2.config import CfgNode as CN
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from .pyramid import AiluRusSimpleFeaturePyramid
from .rcnn import AiluRusRCNN
from .settings import DEFAULTS
from .vit import AiluRusViT

__all__ = ["add_ailurus_config", "build_ailurus_vitdet_backbone", "use_ailurus"]


def use_ailurus(model, **settings) -> None:
    """Switch a ViTDet Mask R-CNN lazy config (``GeneralizedRCNN``, ``SimpleFeaturePyramid`` over
    ``ViT``) to AiluRus, in place: the meta-architecture becomes ``AiluRusRCNN`` (which checks its
    input images), the backbone ``AiluRusSimpleFeaturePyramid`` over ``AiluRusViT``, and every
    AiluRus setting is written on ``model.backbone.net`` (defaults, updated by ``settings``)."""
    model._target_ = AiluRusRCNN
    model.backbone._target_ = AiluRusSimpleFeaturePyramid
    model.backbone.net._target_ = AiluRusViT
    model.backbone.net.update({**DEFAULTS, **settings})


def add_ailurus_config(cfg: CN) -> None:
    """Add ``MODEL.VIT`` (ViTDet-B defaults) and ``MODEL.AILURUS`` (every setting, upper case) to a
    yacs config."""
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
    cfg.MODEL.AILURUS = CN({name.upper(): value for name, value in DEFAULTS.items()})


@BACKBONE_REGISTRY.register()
def build_ailurus_vitdet_backbone(cfg: CN, input_shape: ShapeSpec) -> AiluRusSimpleFeaturePyramid:
    vit = cfg.MODEL.VIT
    # An empty string is None for the optional settings (unfold, num_clusters): YAML files often
    # cannot write None.
    settings = {name: cfg.MODEL.AILURUS[name.upper()] for name in DEFAULTS}
    settings = {name: None if value == "" and DEFAULTS[name] is None else value for name, value in settings.items()}
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
        **settings,
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
