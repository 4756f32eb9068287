# Fine-tuning the frozen-backbone nuclei model (vitdet_s_nuclei.py) at a 512 px canvas: its heads,
# trained on 128 px crops at 2x, continue on 256 px crops of the same top half at the same 2x
# scale (512 px), flipped and rotated at random, for a short schedule at a lower rate. The study
# (`--datasets nuclei_512`) starts every seed from that seed's vitdet_s_nuclei.py weights
# (`train.init_checkpoint`), with AiluRus off (the baseline fine-tune) and on, the same recipe.
# Evaluated on the val half's two 256 px tiles at 2x (512 px, the training canvas); at 1024 by
# `--datasets nuclei_512_at1024` (vitdet_s_nuclei_1024_filled.py's test set and counts).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from .vitdet_s_nuclei import dataloader, lr_multiplier, model, optimizer, train

canvas = 512
model.backbone.net.img_size = canvas
model.backbone.square_pad = canvas
dataloader.train.dataset.names = "ailurus_nuclei_train_whole"
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.RandomFlip)(horizontal=False, vertical=True),
    L(T.RandomRotation)(angle=[0, 90, 180, 270], sample_style="choice", expand=True),
    # the 256 x 512 half (or 512 x 256 rotated) at 2x, +-25%: the scale the heads were trained at
    L(T.ResizeScale)(min_scale=0.8, max_scale=1.25, target_height=2 * canvas, target_width=2 * canvas),
    L(T.FixedSizeCrop)(crop_size=(canvas, canvas), pad=False),
]
dataloader.train.total_batch_size = 2
dataloader.test.dataset.names = "ailurus_nuclei_val_256"
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=canvas, max_size=canvas)]
model.proposal_generator.pre_nms_topk = (600, 1000)
model.proposal_generator.post_nms_topk = (300, 500)  # ~30 nuclei per tile
train.max_iter = 100
train.eval_period = 25  # loss and AP curves
train.checkpointer = dict(period=25, max_to_keep=2)
train.output_dir = "output/study/nuclei_512"
optimizer.lr = 1e-4
lr_multiplier.warmup_length = 10 / train.max_iter
