# The accuracy study's demo detector: the make-demo model (DINOv2 ViT-S/16 frozen, pyramid and heads
# trained at 256 px on the embedded photo set) on a longer schedule, 1000 iterations of 4 images
# instead of 600 of 2, where val AP has levelled off (docs/study.md, "The demo dataset"). The 1024 px
# photo set's heads start from it (vitdet_s_demo_large.py).
from ..demo.vitdet_s_demo_ailurus import dataloader, lr_multiplier, model, optimizer, train

train.max_iter = 1000
train.eval_period = 250  # AP curve
dataloader.train.total_batch_size = 4
