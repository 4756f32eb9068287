# The demo model with AiluRus: clusters after 2 of 6 blocks, keeping half of the 256 tokens.
from ..common.models.mask_rcnn_vitdet_ailurus import use_ailurus
from .vitdet_demo_baseline import dataloader, lr_multiplier, model, optimizer, train

use_ailurus(model, cluster_layer=2)
