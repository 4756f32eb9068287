# ViTDet-L Mask R-CNN on COCO with AiluRus: cluster_layer 6 (a quarter of the 24 blocks on the full grid), like ViT-B.
from ailurus import use_ailurus
from .vitdet_baseline_l import dataloader, lr_multiplier, model, optimizer, train

use_ailurus(model, cluster_layer=6)
