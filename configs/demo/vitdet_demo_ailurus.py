# The demo model with AiluRus: cluster_layer 2 (2 of 6 blocks on the full grid), keeping half of the 256 tokens.
from ailurus import use_ailurus
from .vitdet_demo_baseline import dataloader, lr_multiplier, model, optimizer, train

use_ailurus(model, cluster_layer=2)
