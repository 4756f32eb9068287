# The 1024 px copy-paste model (vitdet_s_demo_large.py, heads trained on 512 px crops) evaluated at
# ViTDet's canvas: the whole val scenes at their own scale (long side 1024, short side 768-1024, so
# 0-25% of the square canvas is padding). The study reuses the demo_large weights; nothing trains
# at 1024.
from .vitdet_s_demo_large import dataloader, lr_multiplier, model, optimizer, train

canvas = 1024
dataloader.test.dataset.names = "ailurus_demo_1024_val"
model.backbone.square_pad = canvas
model.backbone.net.img_size = canvas
