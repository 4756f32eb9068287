# ViTDet-B Mask R-CNN on COCO with AiluRus: the baseline recipe, AiluRus backbone.
from ailurus import use_ailurus
from .vitdet_baseline import dataloader, lr_multiplier, model, optimizer, train

use_ailurus(model)
