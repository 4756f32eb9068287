# ViTDet-H Mask R-CNN on COCO with AiluRus: cluster_layer 8 (a quarter of the 32 blocks on the full grid), like ViT-B.
from ailurus import use_ailurus
from .vitdet_baseline_h import dataloader, lr_multiplier, model, optimizer, train

use_ailurus(model, cluster_layer=8)
