# The SpaceNet model (vitdet_s_spacenet.py, heads trained at 512 px) evaluated at ViTDet's 1024 px:
# the whole right half (900 x 450) resized to 1024 x 512 at the training scale's neighbourhood
# (x1.14), on a canvas of its own aspect (square_pad 0), so no token is padding. The study reuses
# the spacenet weights; nothing trains at 1024.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from .vitdet_s_spacenet import dataloader, lr_multiplier, model, optimizer, train

canvas = 1024
dataloader.test.dataset.names = "ailurus_spacenet_val"
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=canvas // 2, max_size=canvas)]
model.backbone.square_pad = 0
model.backbone.net.img_size = canvas
