# ViTDet's COCO loader: large-scale jitter to a 1024 square for training, 1024 long edge for test.
import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from ailurus.data import use_checked_mapper

image_size = 1024
dataloader = model_zoo.get_config("common/data/coco.py").dataloader
use_checked_mapper(dataloader)  # unreadable images: an error naming the file, or skipped (opt-in)
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.ResizeScale)(min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.total_batch_size = 64
dataloader.train.mapper.recompute_boxes = True  # boxes change with cropping
dataloader.evaluator.use_fast_impl = False  # Detectron2's compiled COCOeval is built for Python 3.10
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size),
]
