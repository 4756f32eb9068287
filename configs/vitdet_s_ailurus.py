# ViTDet-S Mask R-CNN on COCO from the converted DINOv2 ViT-S/16 weights, with AiluRus.
from ailurus import use_ailurus
from .vitdet_s_baseline import dataloader, lr_multiplier, model, optimizer, train

use_ailurus(model)
