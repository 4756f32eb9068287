# ViTDet-H Mask R-CNN on COCO, 75 epochs, MAE initialisation.
from functools import partial

from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

from .vitdet_baseline import dataloader, lr_multiplier, model, optimizer, train, weights_dir

train.init_checkpoint = f"{weights_dir}/mae_pretrain_vit_huge_p14to16.pth?matching_heuristics=True"
model.backbone.net.embed_dim = 1280
model.backbone.net.depth = 32
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.5
# blocks 7, 15, 23, 31 use global attention
model.backbone.net.window_block_indexes = [i for i in range(32) if i % 8 != 7]
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=32, lr_decay_rate=0.9)
train.max_iter = train.max_iter * 3 // 4  # 100 -> 75 epochs
lr_multiplier.scheduler.milestones = [m * 3 // 4 for m in lr_multiplier.scheduler.milestones]
lr_multiplier.scheduler.num_updates = train.max_iter
