# ViTDet-S (DINOv2 ViT-S/16, frozen) with AiluRus on the 1024 px copy-paste set
# (`python -m ailurus.data.demo --set ailurus_demo_1024`: 4-16 objects from about 30 to 500 px on
# real backgrounds that fill 75-100% of a 1024 canvas). The heads train on 512 px crops of the
# scenes at their own scale (x0.8-1.25), and are evaluated at that canvas on the val scenes' 512 px
# tiles (objects cut at tile borders); vitdet_s_demo_large_1024.py evaluates the same weights on
# the whole scenes at 1024. The study starts these heads from the 256 px demo detector of the same
# seed (its `INIT_FROM`; the same objects at a quarter of the scale): from scratch they reached
# box AP 1.9 in 400 iterations, from the demo detector 11.7 in 200 and 15.2 in 600 (docs/study.md).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from ailurus.data import DEMO_1024, register_demo_datasets

from ..demo.vitdet_s_demo_ailurus import dataloader, lr_multiplier, model, optimizer, train

canvas = 512
register_demo_datasets(demo_set=DEMO_1024)
dataloader.train.dataset.names = "ailurus_demo_1024_train"
dataloader.test.dataset.names = "ailurus_demo_1024_val_tiles"
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.ResizeScale)(min_scale=0.8, max_scale=1.25, target_height=2 * canvas, target_width=2 * canvas),
    L(T.FixedSizeCrop)(crop_size=(canvas, canvas), pad=False),
]
dataloader.test.mapper.augmentations = []  # tiles at their own scale, at most 512 px
model.backbone.square_pad = canvas
model.backbone.net.img_size = canvas
model.proposal_generator.anchor_generator.sizes = [[32], [64], [128], [256], [512]]  # objects 30-500 px
train.output_dir = "output/study/demo_large"
train.max_iter = 600
train.eval_period = 200  # loss and AP curves
dataloader.train.total_batch_size = 2
