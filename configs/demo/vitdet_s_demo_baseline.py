# The pretrained-feature demo model with AiluRus off (the model `make demo` trains).
from .vitdet_s_demo_ailurus import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.enabled = False
