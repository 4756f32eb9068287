# The frozen-backbone nuclei model (vitdet_s_nuclei.py, heads trained on 128 px crops at 256 px, x2)
# evaluated at ViTDet's 1024 px on a canvas the image fills: the bottom half (256 x 512) resized 2x
# to 512 x 1024 on a canvas of its own aspect (square_pad 0), so no token is padding (the square
# 1024 canvas of vitdet_s_nuclei_full_1024.py is half padding). Nothing trains at 1024.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from .vitdet_s_nuclei import dataloader, lr_multiplier, model, optimizer, train

canvas = 1024
dataloader.test.dataset.names = "ailurus_nuclei_val_whole"
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=canvas // 2, max_size=canvas)]
model.backbone.square_pad = 0
model.backbone.net.img_size = canvas
# One image holds all ~60 val nuclei: ViTDet's test-time proposal and detection counts.
model.proposal_generator.pre_nms_topk = (600, 1000)
model.proposal_generator.post_nms_topk = (300, 1000)
model.roi_heads.box_predictor.test_topk_per_image = 300
