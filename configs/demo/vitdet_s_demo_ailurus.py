# The demo on pretrained features: a ViTDet-S whose backbone is DINOv2 ViT-S/16 (converted offline
# by `make weights`, read from $AILURUS_WEIGHTS, default ./weights), frozen, in ViTDet form (window
# attention in blocks 0,1,3,4,6,7,9,10, global in 2,5,8,11), with AiluRus; the pyramid and Mask
# R-CNN heads are trained on the embedded demo set at 256 px. Freezing the backbone keeps the
# features DINOv2's own (what AiluRus is evaluated on, without fine-tuning) and the training cheap.
import os

from ailurus import use_ailurus
from .vitdet_demo_baseline import dataloader, image_size, lr_multiplier, model, optimizer, train

use_ailurus(model, cluster_layer=3)
model.backbone.net.update(
    embed_dim=384, depth=12, num_heads=6, patch_size=16, window_size=8, drop_path_rate=0.0,
    window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10], use_rel_pos=False,
    pretrain_img_size=592, pretrain_use_cls_token=True,  # DINOv2's 37 x 37 position table
    freeze_blocks=12,
)
train.init_checkpoint = os.path.join(os.environ.get("AILURUS_WEIGHTS", "weights"), "dinov2_vits16_d2.pth")
train.output_dir = "output/demo_s"
# A schedule that fits the demo's time budget on 2 CPU cores (0.5-0.6 s per iteration here):
# 600 iterations of 2 images reach about the AP of 500 of 4 (box / mask 14.9 / 10.5 against
# 16.5 / 11.4) in 57% of the time; 500 of 2 reach 10.4 / 7.0 (README, "The schedule").
train.max_iter = 600
dataloader.train.total_batch_size = 2
