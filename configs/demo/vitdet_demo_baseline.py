# A small ViTDet Mask R-CNN on the embedded demo set (256 px, 6 categories): trains in minutes
# on 2 CPU cores. Same structure as ViTDet (ViT + simple feature pyramid + Mask R-CNN), scaled down.
import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

from ailurus.data import DEMO_CATEGORIES, register_demo_datasets, use_checked_mapper

register_demo_datasets()  # ailurus_demo_{train,val} under $AILURUS_DEMO_DATA (default datasets/ailurus_demo)
image_size = 256
channels = 64

model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
model.backbone.net.update(
    img_size=image_size, embed_dim=192, depth=6, num_heads=3, drop_path_rate=0.0, window_size=4,
    window_block_indexes=[0, 1, 3, 4],  # blocks 2 and 5 global
)
model.backbone.square_pad = image_size
model.backbone.out_channels = channels
model.proposal_generator.head.in_channels = channels
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.pre_nms_topk = (600, 300)
model.proposal_generator.post_nms_topk = (300, 100)
model.roi_heads.num_classes = len(DEMO_CATEGORIES)
model.roi_heads.batch_size_per_image = 64
model.roi_heads.box_head.input_shape = ShapeSpec(channels=channels, height=7, width=7)
model.roi_heads.box_head.conv_dims = [channels, channels]
model.roi_heads.box_head.fc_dims = [256]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=256)
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=channels, width=14, height=14)
model.roi_heads.mask_head.conv_dims = [channels, channels, channels]

dataloader = model_zoo.get_config("common/data/coco.py").dataloader
use_checked_mapper(dataloader)  # unreadable images: an error naming the file, or skipped (opt-in)
dataloader.train.dataset.names = "ailurus_demo_train"
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.ResizeScale)(min_scale=0.6, max_scale=1.4, target_height=image_size, target_width=image_size),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.recompute_boxes = True
dataloader.train.mapper.instance_mask_format = "bitmask"  # the demo set stores exact RLE masks
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 1
dataloader.test.dataset.names = "ailurus_demo_val"
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size)]
dataloader.test.num_workers = 1
dataloader.evaluator.use_fast_impl = False  # Detectron2's compiled COCOeval is built for Python 3.10
dataloader.evaluator.output_dir = "${train.output_dir}"

train = model_zoo.get_config("common/train.py").train
train.init_checkpoint = ""  # from scratch: nothing to download
train.output_dir = "output/demo"
train.max_iter = 500
train.checkpointer = dict(period=100, max_to_keep=3)
train.eval_period = 0  # the demo evaluates after training, AiluRus off and on
train.log_period = 20
train.seed = 0

optimizer = model_zoo.get_config("common/optim.py").AdamW
optimizer.lr = 4e-4
optimizer.weight_decay = 0.05
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.05),
    warmup_length=50 / train.max_iter,
    warmup_factor=0.01,
)
