"""Deployable forward pass: no graph breaks, torch.export and ONNX match eager, hooks and compiled
backbones run inside Mask R-CNN, and clustering stays in fp32 under bf16 autocast."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_vit_kwargs
from test_model import _sample, tiny_mask_rcnn

from ailurus import AiluRusViT
from ailurus.checkpoint import load_config_weights
from ailurus.clustering import cluster_tokens
from ailurus.config import build_ailurus_vitdet_backbone  # noqa: F401  (the yacs builder is registered)
from ailurus.export import ExportError, export_backbone
from ailurus.pyramid import TOKENS_KEPT, AiluRusSimpleFeaturePyramid

KNOBS = dict(cluster_layer=2, knn_k=3, radius=1, assign_radius=2, keep_ratio=0.3)
REDUCERS = ["ailurus", "tome", "tome_window", "expedite", "pool"]
# Anchors and assignments of every reducer, computed by the code of commit 601348a (before the
# forward pass was made static): on three random 112 x 144 images (padded in two ways) with a tiny
# ViT, and on the 1024 px coffee photo with the DINOv2 ViT-S weights.
REFERENCE = os.path.join(REPO, "tests", "data", "clusters_reference.npz")


def _images() -> torch.Tensor:
    """Two 112 x 144 images (7 x 9 tokens: window 3 needs border padding), the second half zero padding."""
    images = torch.randn(2, 3, 112, 144)
    images[1, :, :, 80:] = 0
    return images


def _counting(graphs: list):
    """A torch.compile backend that runs each graph as traced and records it in ``graphs``."""
    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    return backend


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("knobs", [dict(single_share=0.25, position_weight=0.2, region_balance=0.5, unfold="soft_residual",
                                        span_windows=True),
                                   dict(enabled=False)],
                         ids=["ailurus-variants", "off"])
def test_the_fixed_budget_backbone_compiles_whole(knobs):
    """Window and global blocks before and after clustering, with and without image padding: one
    graph, no break (any data-dependent branch or shape would break it). AiluRus runs here with
    the method variants on (every step of the default and theirs); the AOT test below compiles the
    defaults with fullgraph too."""
    net = AiluRusViT(**tiny_vit_kwargs(), **{**KNOBS, **knobs}).eval()
    graphs = []
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(net, backend=_counting(graphs), fullgraph=True)  # fullgraph: a break raises
        for x in (_images(), torch.randn(2, 3, 112, 144)):  # with and without padding: the same graph
            assert torch.equal(compiled(x)["last_feat"], net(x)["last_feat"])
    assert len(graphs) == 1


def test_the_aot_compiled_backbone_matches_eager():
    """AOTAutograd's decompositions and functionalisation (what inductor compiles from; inductor
    itself takes minutes to compile on 2 cores, so the benchmark's --compile runs it): within 1e-4."""
    net = AiluRusViT(**tiny_vit_kwargs(), **KNOBS).eval()
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
        for x in (_images(), torch.randn(2, 3, 112, 144)):
            assert _relative_error(compiled(x)["last_feat"], net(x)["last_feat"]) <= 1e-4


@pytest.mark.parametrize("reducer", ["tome", "tome_window", "expedite", "pool"])
def test_every_peer_compiles_whole(reducer):
    net = AiluRusViT(**tiny_vit_kwargs(), **KNOBS, reducer=reducer).eval()
    images = _images()
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(net, backend="eager", fullgraph=True)
        assert torch.equal(compiled(images)["last_feat"], net(images)["last_feat"])


def _backbone(**overrides) -> AiluRusSimpleFeaturePyramid:
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool

    net = AiluRusViT(**tiny_vit_kwargs(out_feature="last_feat"), **{**KNOBS, **overrides})
    return AiluRusSimpleFeaturePyramid(net=net, in_feature="last_feat", out_channels=32,
                                       scale_factors=(4.0, 2.0, 1.0, 0.5), top_block=LastLevelMaxPool(),
                                       norm="LN", square_pad=144).eval()


@pytest.mark.parametrize("span_windows", [False, True])
def test_the_exported_program_matches_eager(tmp_path, span_windows):
    backbone = _backbone(span_windows=span_windows)
    images = torch.nn.functional.pad(_images(), (0, 0, 0, 32))  # 144 x 144 canvas
    names = export_backbone(backbone, images, "exported-program", str(tmp_path / "backbone.pt2"))
    exported = torch.export.load(str(tmp_path / "backbone.pt2")).module()
    fresh = torch.randn_like(images)
    fresh[0, :, 100:] = 0  # other images, other padding: the same graph
    with torch.no_grad():
        for x in (images, fresh):
            expected, got = backbone(x), dict(zip(names, exported(x)))
            for name in names[:-1]:
                assert _relative_error(got[name], expected[name]) <= 1e-4
            assert torch.equal(got[TOKENS_KEPT], expected[TOKENS_KEPT])


@pytest.mark.parametrize("span_windows", [False, True])
def test_onnxruntime_matches_eager_on_the_same_clusters(tmp_path, span_windows):
    import onnxruntime

    backbone = _backbone(span_windows=span_windows)
    images = torch.nn.functional.pad(_images(), (0, 0, 0, 32))
    names = export_backbone(backbone, images, "onnx", str(tmp_path / "backbone.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "backbone.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = backbone(images)
    got = dict(zip(names, session.run(names, {"images": images.numpy()})))
    for name in names[:-1]:  # another cluster anywhere would move these far more than 1e-4
        assert np.abs(got[name] - expected[name].numpy()).max() <= 1e-4 * expected[name].abs().max().item()
    assert np.array_equal(got[TOKENS_KEPT], expected[TOKENS_KEPT].numpy())


def test_the_adaptive_budget_is_refused_in_one_line(tmp_path):
    with pytest.raises(ExportError, match="budget='adaptive' cannot be exported"):
        export_backbone(_backbone(budget="adaptive"), torch.randn(1, 3, 144, 144), "onnx", str(tmp_path / "b.onnx"))
    proc = subprocess.run(
        [sys.executable, "-m", "ailurus.export", "--config-file", f"{REPO}/configs/demo/vitdet_demo_ailurus.py",
         "--format", "onnx", "--out", str(tmp_path / "b.onnx"), "model.backbone.net.budget=adaptive"],
        capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "budget='adaptive' cannot be exported" in proc.stderr


def test_mask_rcnn_calls_its_backbone_like_any_module():
    model = tiny_mask_rcnn().eval()
    inputs = [{k: v for k, v in _sample().items() if k != "instances"}]
    calls = []
    model.backbone.register_forward_hook(lambda module, args, output: calls.append(sorted(output)))
    with torch.no_grad():
        eager = model(inputs)
    assert len(calls) == 1 and TOKENS_KEPT in calls[0]  # the hook fires at inference
    graphs = []
    model.backbone = torch.compile(model.backbone, backend=_counting(graphs), fullgraph=True)
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = model(inputs)
    assert len(graphs) == 1  # the compiled backbone is the one that ran
    assert compiled[0]["tokens_kept"] == eager[0]["tokens_kept"] == 32  # ceil(0.5 * 8 * 8) on the 128 px canvas
    assert torch.equal(compiled[0]["instances"].pred_boxes.tensor, eager[0]["instances"].pred_boxes.tensor)


def test_clustering_runs_in_fp32_under_bf16_autocast():
    """Distances are computed in fp32 with autocast off, so bf16 autocast changes the clusters only
    through the block outputs it feeds in, never through the clustering's own arithmetic."""
    x = torch.randn(2, 7, 9, 64).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_autocast = cluster_tokens(x, 20, knn_k=3, radius=1, assign_radius=2)
    in_fp32 = cluster_tokens(x.float(), 20, knn_k=3, radius=1, assign_radius=2)
    assert torch.equal(in_autocast.anchors, in_fp32.anchors) and torch.equal(in_autocast.assign, in_fp32.assign)
    net = AiluRusViT(**tiny_vit_kwargs(), **KNOBS).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(_images())["last_feat"]
    assert torch.isfinite(out).all()


def _assert_same_clusters(net: AiluRusViT, images: torch.Tensor, name: str, keeps) -> None:
    reference = np.load(REFERENCE)
    layer = net.cluster_layer
    with torch.no_grad():
        grid, is_pad = net.grid_tokens(images, layer)
        for reducer in REDUCERS:
            for keep in keeps:
                net.settings = net.with_settings(reducer=reducer, keep_ratio=keep)
                clusters = net.find_clusters(grid, is_pad, net.blocks[layer:])
                key = f"{name}_{reducer}_{keep}"
                anchors, assign = clusters.anchors.numpy(), clusters.assign.numpy().astype(np.int64)
                ref_anchors, ref_assign = reference[key + "_anchors"], reference[key + "_assign"].astype(np.int64)
                # The same anchors, and every token in the cluster of the same anchor. Not the slot
                # order: anchors whose scores tie to the last bit swap slots between CPUs (4 of
                # 2048 on the photo, AVX-512 against the reference's machine).
                assert np.array_equal(np.sort(anchors, -1), np.sort(ref_anchors, -1)), key
                assert np.array_equal(np.take_along_axis(anchors, assign, -1),
                                      np.take_along_axis(ref_anchors, ref_assign, -1)), key


def test_the_clusters_are_those_of_the_code_before_the_static_forward(converted):
    from detectron2.config import LazyConfig, instantiate

    from ailurus.experiments.images import model_input, sample_photo

    images = torch.randn(3, 3, 112, 144)
    images[1, :, :, 100:] = 0
    images[2, :, 64:] = 0
    torch.manual_seed(0)  # the reference's weights: drawn after a fresh seed, not after the images
    net = AiluRusViT(**tiny_vit_kwargs(), cluster_layer=2, knn_k=3, radius=1, assign_radius=2).eval()
    _assert_same_clusters(net, images, "tiny", (0.3, 0.6))
    cfg = LazyConfig.load(os.path.join(REPO, "configs", "vitdet_s_ailurus.py"))
    cfg.train.init_checkpoint = converted[16]
    model = instantiate(cfg.model).eval()
    load_config_weights([model], cfg)
    with torch.no_grad():
        photo = model.preprocess_image([model_input(sample_photo("coffee"), 1024, model.input_format)]).tensor
    _assert_same_clusters(model.backbone.net, photo, "coffee", (0.5, 0.25))


def _same_detections(got, expected) -> None:
    """The same set of detections: each expected one has a counterpart of the same class, box and
    score (in any order: near-equal scores may swap ranks), with the same mask."""
    assert len(got) == len(expected) > 0
    box_gap = torch.cdist(expected.pred_boxes.tensor, got.pred_boxes.tensor, p=float("inf"))
    box_gap += (expected.pred_classes[:, None] != got.pred_classes[None]) * 1e9
    match = box_gap.argmin(1)
    assert box_gap.min(1).values.max() <= 1e-3 and match.unique().numel() == len(expected)
    assert torch.allclose(got.scores[match], expected.scores, rtol=1e-4)
    assert torch.allclose(got.pred_masks[match], expected.pred_masks, atol=1e-4)


def test_the_whole_mask_rcnn_in_onnxruntime_detects_what_pytorch_does(tmp_path, converted):
    """Detectron2's TracingAdapter route, DINOv2 ViT-S backbone with AiluRus at keep 0.5, on the
    photo it was traced on and on another photo of the same size."""
    import cv2
    import onnxruntime
    from detectron2.config import LazyConfig, instantiate

    from ailurus.experiments.images import model_input, sample_photo
    from ailurus.export import export_mask_rcnn

    cfg = LazyConfig.load(os.path.join(REPO, "configs", "vitdet_s_ailurus.py"))
    cfg.model.backbone.square_pad = 256
    cfg.model.roi_heads.box_predictor.test_score_thresh = 0.3
    cfg.model.proposal_generator.post_nms_topk = (2000, 200)  # 200 proposals, not 1000: 5x faster heads
    cfg.train.init_checkpoint = converted[16]
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    load_config_weights([model], cfg)
    # Random heads, with class scores spread enough that dozens of detections clear 0.3 with distinct
    # scores, instead of 100 near-ties at 1 / 81.
    torch.nn.init.normal_(model.roi_heads.box_predictor.cls_score.weight, std=0.1)
    coffee = model_input(sample_photo("coffee"), 256, model.input_format)["image"]  # (3, 171, 256)
    cat = torch.as_tensor(cv2.resize(sample_photo("chelsea"), coffee.shape[:0:-1]).transpose(2, 0, 1).copy())
    adapter = export_mask_rcnn(model, coffee, "onnx", str(tmp_path / "model.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for image in (coffee, cat):
        with torch.no_grad():
            expected = model.inference([{"image": image}], do_postprocess=False)[0]
        outputs = session.run(None, {"image": image.numpy()})
        got = adapter.outputs_schema([torch.from_numpy(o) for o in outputs])[0]["instances"]
        _same_detections(got, expected)
    with pytest.raises(ExportError, match="data-dependent shapes"):
        export_mask_rcnn(model, coffee, "exported-program", str(tmp_path / "model.pt2"))
