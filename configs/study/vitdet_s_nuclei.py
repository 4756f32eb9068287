# ViTDet-S (DINOv2 ViT-S/16, frozen, as in the demo) with AiluRus on the nuclei image of stardist's
# wheel: trained on flipped / rotated random crops of its top half, evaluated on tiles of its
# bottom half (`python -m ailurus.data.nuclei` builds it under $AILURUS_NUCLEI_DATA).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from ailurus.data import NUCLEI_CATEGORIES, register_nuclei_datasets

from ..demo.vitdet_s_demo_ailurus import dataloader, image_size, lr_multiplier, model, optimizer, train

register_nuclei_datasets()
dataloader.train.dataset.names = "ailurus_nuclei_train"
dataloader.test.dataset.names = "ailurus_nuclei_val"
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.RandomFlip)(horizontal=False, vertical=True),
    L(T.RandomRotation)(angle=[0, 90, 180, 270], sample_style="choice", expand=False),
    L(T.ResizeScale)(min_scale=0.8, max_scale=1.25, target_height=image_size, target_width=image_size),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
]
model.roi_heads.num_classes = len(NUCLEI_CATEGORIES)
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.roi_heads.box_predictor.test_topk_per_image = 100
train.output_dir = "output/study/nuclei"
# The study's schedule, kept apart from the demo's (which follows the demo's time budget).
train.max_iter = 300
dataloader.train.total_batch_size = 4
