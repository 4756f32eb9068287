# The nuclei study with the whole DINOv2 ViT-S fine-tuned (not frozen): ViTDet's recipe of AdamW
# with layer-wise learning-rate decay 0.7, at a lower base rate than the heads-only demo, and an
# evaluation every 100 iterations so loss and AP curves show whether the schedule has converged.
from functools import partial

from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

from .vitdet_s_nuclei import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.freeze_blocks = 0
optimizer.lr = 2e-4
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=12, lr_decay_rate=0.7)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}
train.max_iter = 600
lr_multiplier.warmup_length = 50 / train.max_iter
train.eval_period = 100
train.output_dir = "output/study/nuclei_full"
