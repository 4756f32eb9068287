# ViTDet-S (DINOv2 ViT-S/16, frozen) with AiluRus on SpaceNet buildings (the solaris wheel's scene,
# `make spacenet-data`): the heads train on 450 px crops of the scene's left half at a 512 px canvas
# (x1.14, flipped and rotated), and are evaluated on the right half's two 450 px squares at the same
# canvas and scale, which they fill (no padding).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from ailurus.data import SPACENET_CATEGORIES, register_spacenet_datasets

from ..demo.vitdet_s_demo_ailurus import dataloader, lr_multiplier, model, optimizer, train

canvas = 512
register_spacenet_datasets()
dataloader.train.dataset.names = "ailurus_spacenet_train"
dataloader.test.dataset.names = "ailurus_spacenet_val_tiles"
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.RandomFlip)(horizontal=False, vertical=True),
    L(T.RandomRotation)(angle=[0, 90, 180, 270], sample_style="choice", expand=False),
    L(T.ResizeScale)(min_scale=0.9, max_scale=1.4, target_height=canvas, target_width=canvas),
    L(T.FixedSizeCrop)(crop_size=(canvas, canvas), pad=False),
]
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=canvas, max_size=canvas)]
model.backbone.square_pad = canvas
model.backbone.net.img_size = canvas
model.roi_heads.num_classes = len(SPACENET_CATEGORIES)
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]  # buildings: 20-60 px
train.output_dir = "output/study/spacenet"
train.max_iter = 600
train.eval_period = 150  # loss and AP curves
dataloader.train.total_batch_size = 2
