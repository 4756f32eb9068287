# The whole-backbone nuclei model (vitdet_s_nuclei_full.py, trained on 256 px crops) evaluated at
# ViTDet's 1024 px canvas: the bottom half as one 256 x 512 image, resized 2x as the tiles are, so
# objects keep their training scale while the canvas has 64 x 64 tokens (half of them padding, as
# for a COCO photo of aspect 2). The study reuses the nuclei_full weights; nothing trains at 1024.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from .vitdet_s_nuclei_full import dataloader, lr_multiplier, model, optimizer, train

canvas = 1024
dataloader.test.dataset.names = "ailurus_nuclei_val_whole"
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=canvas // 2, max_size=canvas)]
model.backbone.square_pad = canvas
model.backbone.net.img_size = canvas
# One image holds all ~60 val nuclei, where a tile held ~10: ViTDet's test-time proposal and
# detection counts instead of the 256 px tile's.
model.proposal_generator.pre_nms_topk = (600, 1000)
model.proposal_generator.post_nms_topk = (300, 1000)
model.roi_heads.box_predictor.test_topk_per_image = 300
