"""The full Mask R-CNN with AiluRus, the yacs builder, and constructor checks."""
import os

import pytest
import torch
from conftest import REPO, TINY_MODEL_OVERRIDES, tiny_vit_kwargs
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.utils.events import EventStorage
from detectron2.structures import BitMasks, Boxes, Instances

from ailurus import AiluRusSimpleFeaturePyramid, AiluRusViT
from ailurus.config import add_ailurus_config
from ailurus.experiments.flops import count_flops


def tiny_mask_rcnn(overrides=()):
    cfg = LazyConfig.load(os.path.join(REPO, "configs/common/models/mask_rcnn_vitdet_ailurus.py"))
    cfg = LazyConfig.apply_overrides(cfg, TINY_MODEL_OVERRIDES + list(overrides))
    cfg.model.roi_heads.box_predictor.test_score_thresh = 0.0
    return instantiate(cfg.model)


def _sample(h=96, w=128):
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 20.0, 120.0, 90.0]]))
    inst.gt_classes = torch.tensor([0, 2])
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 12:70, 10:60] = True
    masks[1, 20:90, 50:120] = True
    inst.gt_masks = BitMasks(masks)
    return {"image": image, "instances": inst, "height": h, "width": w}


def test_train_mode_losses_and_gradients_reach_every_backbone_parameter():
    model = tiny_mask_rcnn().train()
    assert isinstance(model.backbone, AiluRusSimpleFeaturePyramid)
    with EventStorage():
        losses = model([_sample(), _sample(80, 128)])
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= losses.keys()
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name, p in model.backbone.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # the blocks before clustering learn through the merge and the unfold
    assert model.backbone.net.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_eval_mode_returns_boxes_and_masks():
    model = tiny_mask_rcnn().eval()
    sample = _sample()
    with torch.no_grad():
        (out,) = model([{"image": sample["image"], "height": 192, "width": 256}])
    inst = out["instances"]
    assert len(inst) > 0
    assert inst.pred_boxes.tensor.shape == (len(inst), 4) and torch.isfinite(inst.pred_boxes.tensor).all()
    assert inst.pred_masks.shape == (len(inst), 192, 256)
    assert inst.pred_masks.dtype == torch.bool


def test_yacs_registry_builder():
    cfg = get_cfg()
    add_ailurus_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_ailurus_vitdet_backbone"
    cfg.MODEL.VIT.update(IMG_SIZE=128, EMBED_DIM=64, DEPTH=4, NUM_HEADS=4, WINDOW_SIZE=3, WINDOW_BLOCK_INDEXES=[0, 2], SQUARE_PAD=128)
    cfg.MODEL.AILURUS.update(CLUSTER_LAYER=2, KEEP_RATIO=0.25, KNN_K=3, RADIUS=1, ASSIGN_RADIUS=2)
    backbone = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert isinstance(backbone.net, AiluRusViT) and backbone.net.keep_ratio == 0.25
    with torch.no_grad():
        features, state = backbone.forward_with_state(torch.randn(1, 3, 128, 128))
    assert state.positions.shape == (1, 16, 2)
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "p2": (1, 256, 32, 32), "p3": (1, 256, 16, 16), "p4": (1, 256, 8, 8), "p5": (1, 256, 4, 4), "p6": (1, 256, 2, 2)
    }


@pytest.mark.parametrize(
    "kwargs, name, allowed",
    [
        (dict(keep_ratio=0.0), "keep_ratio", "(0, 1]"),
        (dict(keep_ratio=1.5), "keep_ratio", "(0, 1]"),
        (dict(cluster_layer=0), "cluster_layer", "1..3"),
        (dict(cluster_layer=4), "cluster_layer", "1..3"),
        (dict(radius=-1), "radius", ">= 1"),
        (dict(assign_radius=-2), "assign_radius", ">= 0"),
        (dict(knn_k=0), "knn_k", "1..15"),
        (dict(num_clusters=0), "num_clusters", ">= 1"),
        (dict(unfold="nearest"), "unfold", "'copy', 'residual', 'reconstruct' or 'soft_residual'"),
        (dict(unfold="soft_residual", unfold_topk=0), "unfold_topk", "None or an integer >= 1"),
        (dict(unfold_topk=8), "unfold_topk", "None unless the unfold is a soft one ('reconstruct' or 'soft_residual')"),
        (dict(unfold="soft_residual", unfold_temperature=0.0), "unfold_temperature", "None or a number > 0"),
        (dict(reducer="expedite", unfold="copy", unfold_temperature=0.1), "unfold_temperature", "None unless"),
        (dict(single_share=1.0), "single_share", "[0, 1)"),
        (dict(single_share=0.2, budget="adaptive"), "single_share", "budget='fixed'"),
        (dict(single_share=0.2, reducer="tome"), "single_share", "reducer='ailurus'"),
        (dict(position_weight=-1), "position_weight", ">= 0"),
        (dict(position_weight=0.5, reducer="pool"), "position_weight", "reducer='ailurus'"),
        (dict(region_balance=-0.5), "region_balance", ">= 0"),
        (dict(region_balance=0.5, reducer="tome"), "region_balance", "reducer='ailurus'"),
    ],
)
def test_invalid_parameters_raise_value_error(kwargs, name, allowed):
    with pytest.raises(ValueError) as err:
        AiluRusViT(**tiny_vit_kwargs(), **kwargs)
    assert f"{name}=" in str(err.value) and allowed in str(err.value)


def test_flops_count_the_clustering_and_gathers():
    x = torch.randn(1, 3, 128, 128)
    ours = AiluRusViT(**tiny_vit_kwargs(), cluster_layer=2, knn_k=3, radius=1, assign_radius=2).eval()
    base = AiluRusViT(**tiny_vit_kwargs(), enabled=False).eval()
    ail_flops, ail_unsupported = count_flops(ours, (x,))
    base_flops, base_unsupported = count_flops(base, (x,))
    assert not ail_unsupported and not base_unsupported
    assert 0 < ail_flops < base_flops
    # The benchmark traces every setting the study measures, the method variants too.
    partial = AiluRusViT(**tiny_vit_kwargs(), cluster_layer=2, knn_k=3, radius=1, assign_radius=2, single_share=0.25,
                         position_weight=0.1, region_balance=0.5).eval()
    partial_flops, partial_unsupported = count_flops(partial, (x,))
    assert not partial_unsupported and ail_flops < partial_flops < base_flops
    # Dropping the clustering handles must lower the count: the clustering ops are counted.
    from ailurus.experiments import flops as F

    analysis = F.flop_analysis(ours, (x,))
    by_op = analysis.by_operator()
    assert by_op["gather"] > 0 and by_op["sort"] > 0 and by_op["scatter_add"] > 0


def test_freeze_blocks_freezes_embeddings_and_leading_blocks_only():
    from conftest import tiny_vit_kwargs

    model = AiluRusViT(**tiny_vit_kwargs(), cluster_layer=2, knn_k=3, radius=1, assign_radius=2, freeze_blocks=2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "pos_embed" in frozen and "patch_embed.proj.weight" in frozen
    assert {n.split(".")[1] for n in frozen if n.startswith("blocks.")} == {"0", "1"}
    model(torch.randn(1, 3, 64, 64))["last_feat"].sum().backward()
    assert model.blocks[1].attn.qkv.weight.grad is None and model.blocks[2].attn.qkv.weight.grad is not None
