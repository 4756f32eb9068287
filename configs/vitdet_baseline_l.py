# ViTDet-L Mask R-CNN on COCO, 100 epochs, MAE initialisation.
from functools import partial

from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

from .vitdet_baseline import dataloader, lr_multiplier, model, optimizer, train, weights_dir

train.init_checkpoint = f"{weights_dir}/mae_pretrain_vit_large.pth?matching_heuristics=True"
model.backbone.net.embed_dim = 1024
model.backbone.net.depth = 24
model.backbone.net.num_heads = 16
model.backbone.net.drop_path_rate = 0.4
# blocks 5, 11, 17, 23 use global attention
model.backbone.net.window_block_indexes = [i for i in range(24) if i % 6 != 5]
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=24, lr_decay_rate=0.8)
