# vitdet_s_nuclei_512.py with the whole DINOv2 ViT-S fine-tuned (not frozen), block activations
# recomputed in the backward pass (activation checkpointing) to bound memory at 512 px, with
# ViTDet's layer-wise learning-rate decay (as vitdet_s_nuclei_full.py). Starts from the
# frozen-backbone nuclei model's weights; a shorter schedule, as its steps cost about 3x.
from functools import partial

from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

from .vitdet_s_nuclei_512 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.freeze_blocks = 0
model.backbone.net.use_act_checkpoint = True
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=12, lr_decay_rate=0.7)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}
train.max_iter = 50
lr_multiplier.warmup_length = 10 / train.max_iter
train.checkpointer = dict(period=10, max_to_keep=2)
train.output_dir = "output/study/nuclei_full_512"
