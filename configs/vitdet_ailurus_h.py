# ViTDet-H Mask R-CNN on COCO with AiluRus: clusters after a quarter of the blocks, like ViT-B.
from .common.models.mask_rcnn_vitdet_ailurus import use_ailurus
from .vitdet_baseline_h import dataloader, lr_multiplier, model, optimizer, train

use_ailurus(model, cluster_layer=8)
