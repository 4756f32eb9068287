"""Robustness of the model itself: batch isolation, bad inputs, knob validation, padding budget,
activation checkpointing, thread safety (docs/robustness.md lists every case)."""
import math
import threading

import pytest
import torch
from conftest import tiny_vit_kwargs
from test_model import tiny_mask_rcnn

from ailurus import AiluRusViT, NonFiniteImage
from ailurus.clustering import cluster_tokens
from ailurus.pyramid import AiluRusSimpleFeaturePyramid

KNOBS = dict(cluster_layer=2, knn_k=3, radius=1, assign_radius=2)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


# 112 x 144 px is a 7 x 9 grid with window 3: border windows have empty slots and pad keys.
@pytest.mark.parametrize("enabled", [True, False], ids=["ailurus", "disabled"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_image_does_not_leak_into_its_batch(enabled, bad):
    model = AiluRusViT(**tiny_vit_kwargs(), **KNOBS, keep_ratio=0.5, enabled=enabled, check_finite=False).eval()
    images = torch.randn(3, 3, 112, 144)
    images[0] = bad
    images[2, :, 80:] = 0  # zero padding in the other neighbour
    with torch.no_grad():
        batched = model(images)["last_feat"]
        alone = model(images[1:2])["last_feat"]
    assert not torch.isfinite(batched[0]).all()
    assert torch.isfinite(batched[1:]).all()
    assert _relative_error(alone[0], batched[1]) <= 1e-5


@pytest.mark.parametrize("enabled", [True, False], ids=["ailurus", "disabled"])
def test_mask_rcnn_detections_are_the_same_beside_a_nan_image(enabled):
    model = tiny_mask_rcnn([f"model.backbone.net.enabled={enabled}", "model.backbone.net.check_finite=False"]).eval()
    image = torch.randint(0, 256, (3, 96, 128)).float()
    poison = torch.full((3, 112, 100), math.nan)
    with torch.no_grad():
        (alone,) = model([{"image": image}])
        _, beside = model([{"image": poison}, {"image": image}])
    a, b = alone["instances"], beside["instances"]
    assert len(a) > 0 and len(a) == len(b)
    assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=1e-5, atol=1e-3)
    assert torch.allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    assert torch.equal(a.pred_classes, b.pred_classes)
    assert (a.pred_masks != b.pred_masks).float().mean() < 1e-3


def test_non_finite_pixels_raise_naming_the_image_and_count():
    model = AiluRusViT(**tiny_vit_kwargs(), **KNOBS).eval()
    images = torch.randn(3, 3, 64, 64)
    images[1, 0, :2, :5] = math.nan
    images[2, 2, 0, 0] = math.inf
    with pytest.raises(NonFiniteImage) as err:
        model(images)
    assert err.value.counts == {1: 10, 2: 1}
    assert "image 1: 10 non-finite values" in str(err.value) and "image 2: 1 non-finite" in str(err.value)


def test_mask_rcnn_names_the_file_of_a_non_finite_image():
    model = tiny_mask_rcnn().eval()
    bad = torch.rand(3, 64, 64) * 255
    bad[0, 3, 3] = math.nan
    inputs = [{"image": torch.rand(3, 64, 64) * 255, "file_name": "ok.jpg"}, {"image": bad, "file_name": "bad.jpg"}]
    with pytest.raises(ValueError, match=r"image 1 \(bad.jpg\): 1 non-finite values"):
        with torch.no_grad():
            model(inputs)


@pytest.mark.parametrize(
    "image, message",
    [
        (torch.zeros(3, 0, 0), "0 x 0 px"),
        (torch.zeros(4, 64, 64), "must be a (3, H, W) tensor"),
        (torch.zeros(1, 64, 64), "must be a (3, H, W) tensor"),
        (torch.zeros(64, 64), "must be a (3, H, W) tensor"),
        (torch.zeros(3, 200, 100), "larger than the backbone's 128 x 128 canvas"),
    ],
    ids=["0x0", "4-channel", "1-channel", "2-d", "larger-than-square-pad"],
)
def test_mask_rcnn_refuses_inputs_it_cannot_process(image, message):
    model = tiny_mask_rcnn().eval()
    with pytest.raises(ValueError) as err, torch.no_grad():
        model([{"image": image}])
    assert message in str(err.value)


def test_mask_rcnn_empty_batch():
    model = tiny_mask_rcnn()
    assert model.eval()([]) == []
    with pytest.raises(ValueError, match="empty batch"):
        model.train()([])


def test_one_row_token_grid_is_a_clear_error_and_two_rows_work():
    model = tiny_mask_rcnn(["model.backbone.square_pad=0"]).backbone.eval()
    assert isinstance(model, AiluRusSimpleFeaturePyramid)
    with pytest.raises(ValueError, match="1 x 8 token grid.*at least 32 x 32 px"), torch.no_grad():
        model(torch.randn(1, 3, 16, 128))
    with torch.no_grad():
        features = model(torch.randn(1, 3, 32, 128))
    assert all(torch.isfinite(f).all() for f in features.values())


def test_without_square_pad_images_are_padded_to_the_coarsest_stride_not_cropped():
    model = tiny_mask_rcnn(["model.backbone.square_pad=0"]).eval()
    image = torch.randint(1, 256, (3, 85, 100), dtype=torch.uint8)
    batch = model.preprocess_image([{"image": image}])
    assert tuple(batch.tensor.shape[-2:]) == (96, 128) and batch.image_sizes == [(85, 100)]
    # the patch grid covers every pixel: 6 x 8 tokens, the last row and column part padding
    assert model.backbone.net.grid_tokens(batch.tensor, 1)[0].shape[1:3] == (6, 8)


@pytest.mark.parametrize(
    "kwargs, name, allowed",
    [
        (dict(keep_ratio="abc"), "keep_ratio", "a number in (0, 1]"),
        (dict(keep_ratio=True), "keep_ratio", "a number in (0, 1]"),
        (dict(keep_ratio=math.nan), "keep_ratio", "a number in (0, 1]"),
        (dict(enabled="False"), "enabled", "a boolean"),
        (dict(enabled="no"), "enabled", "a boolean"),
        (dict(enabled=0), "enabled", "a boolean"),
        (dict(check_finite="off"), "check_finite", "a boolean"),
        (dict(use_act_checkpoint=1), "use_act_checkpoint", "a boolean"),
        (dict(freeze_blocks=5), "freeze_blocks", "an integer in 0..4"),
        (dict(freeze_blocks=1.0), "freeze_blocks", "an integer in 0..4"),
        (dict(num_clusters=2.0), "num_clusters", "an integer >= 1"),
        (dict(knn_k=3.0), "knn_k", "an integer"),
        (dict(radius=1.5), "radius", "an integer >= 1"),
        (dict(assign_radius=2.0), "assign_radius", "an integer >= 0"),
        (dict(cluster_layer=1.0), "cluster_layer", "an integer in 1..3"),
        (dict(cluster_layer=True), "cluster_layer", "an integer in 1..3"),
        (dict(unfold=1), "unfold", "'copy', 'residual', 'reconstruct' or 'soft_residual'"),
        (dict(reducer=None), "reducer", "one of 'ailurus'"),
    ],
)
def test_knobs_are_type_checked(kwargs, name, allowed):
    with pytest.raises(ValueError) as err:
        AiluRusViT(**tiny_vit_kwargs(), **kwargs)
    assert f"{name}=" in str(err.value) and allowed in str(err.value)


# A 16 x 16 canvas whose image covers only the top-left corner: most tokens are padding.
@pytest.mark.parametrize("image_hw", [(3, 4), (6, 16), (1, 1), (16, 16)])
@pytest.mark.parametrize("num_clusters", [1, 2, 5, 12, 40, 200])
@pytest.mark.parametrize("assign_radius", [0, 1, 4])
def test_padding_never_takes_the_image_share_of_clusters(image_hw, num_clusters, assign_radius):
    H = W = 16
    x = torch.zeros(2, H, W, 8)
    x[:, : image_hw[0], : image_hw[1]] = torch.randn(2, *image_hw, 8)
    is_pad = (x == 0).all(-1)
    clusters = cluster_tokens(x, num_clusters, knn_k=3, radius=1, assign_radius=assign_radius, is_pad=is_pad)
    flat_pad = is_pad.reshape(2, -1)
    n_image = image_hw[0] * image_hw[1]
    image_anchors = (~flat_pad.gather(1, clusters.anchors)).sum(1)
    share = min(n_image, math.ceil(num_clusters * n_image / (H * W)))
    assert (image_anchors >= share).all()
    assert (image_anchors * H * W >= num_clusters * n_image).all() or (image_anchors == n_image).all()
    for b in range(2):
        assert clusters.anchors[b].unique().numel() == num_clusters
        # image tokens join image clusters only (there is always at least one image anchor)
        anchor_is_pad = flat_pad[b, clusters.anchors[b]]
        assert not anchor_is_pad[clusters.assign[b][~flat_pad[b]]].any()
        # padding gets what is left: its anchors, spread on the lattice, only after the image's share
        if num_clusters - share > 0 and flat_pad[b].any():
            assert anchor_is_pad.sum() >= 1


def test_padding_lattice_thins_out_evenly_when_the_budget_is_small():
    H = W = 32
    x = torch.zeros(1, H, W, 8)
    x[:, :4, :4] = torch.randn(1, 4, 4, 8)
    is_pad = (x == 0).all(-1)
    # assign_radius 1: lattice stride 3, about 110 lattice points on the padding; budget 8 - 1 = 7.
    clusters = cluster_tokens(x, 8, knn_k=3, radius=1, assign_radius=1, is_pad=is_pad)
    pad_anchors = clusters.anchors[0][is_pad.reshape(1, -1)[0, clusters.anchors[0]]]
    rows, cols = pad_anchors // W, pad_anchors % W
    assert pad_anchors.numel() == 7
    assert rows.max() - rows.min() >= W // 2 and cols.max() - cols.min() >= W // 2  # spread, not clumped


def test_activation_checkpointing_gives_the_same_gradients_and_is_used(monkeypatch):
    from ailurus import vit as vit_module

    plain = AiluRusViT(**tiny_vit_kwargs(), **KNOBS).train()
    checked = AiluRusViT(**tiny_vit_kwargs(), **KNOBS, use_act_checkpoint=True).train()
    checked.load_state_dict(plain.state_dict())
    calls = []
    real = vit_module.activation_checkpoint.checkpoint

    def counting(function, *args, **kwargs):
        calls.append(function.__name__)
        return real(function, *args, **kwargs)

    monkeypatch.setattr(vit_module.activation_checkpoint, "checkpoint", counting)
    x = torch.randn(2, 3, 112, 144)
    for model in (plain, checked):
        model(x)["last_feat"].pow(2).mean().backward()
    assert calls == ["run_block"] * 4  # every block, before and after clustering
    for (name, p), q in zip(plain.named_parameters(), checked.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7), name
    calls.clear()
    with torch.no_grad():
        checked(x)
    checked.eval()(x)
    assert calls == []  # nothing to save activations for


def test_two_threads_on_one_model_give_the_sequential_results():
    model = AiluRusViT(**tiny_vit_kwargs(), **KNOBS, keep_ratio=0.4).eval()
    inputs = [torch.randn(1, 3, 112, 144), torch.randn(2, 3, 128, 96)]
    with torch.no_grad():
        expected = [model(x)["last_feat"] for x in inputs]
    results = [None, None]

    def work(i):
        with torch.no_grad():
            for _ in range(5):
                results[i] = model(inputs[i])["last_feat"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        assert torch.equal(got, want)


@pytest.mark.parametrize("enabled, span_windows", [(True, False), (True, True), (False, False)],
                         ids=["ailurus", "ailurus-spanning", "disabled"])
def test_an_image_gives_the_same_output_alone_and_in_a_batch(enabled, span_windows):
    model = AiluRusViT(**tiny_vit_kwargs(), **KNOBS, keep_ratio=0.3, enabled=enabled, span_windows=span_windows).eval()
    images = torch.randn(3, 3, 112, 144)
    images[0, :, :, 100:] = 0
    with torch.no_grad():
        batched = model(images)["last_feat"]
        for i in range(3):
            assert _relative_error(model(images[i : i + 1])["last_feat"][0], batched[i]) <= 1e-5


@pytest.mark.parametrize(
    "shape, message",
    [((3, 64, 64), "takes (B, 3, H, W)"), ((1, 4, 64, 64), "takes (B, 3, H, W)"), ((1, 3, 8, 64), "at least 16 x 16"),
     ((0, 3, 64, 64), "non-empty batch")],
)
def test_backbone_refuses_tensors_it_cannot_process(shape, message):
    model = AiluRusViT(**tiny_vit_kwargs(), **KNOBS).eval()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model(torch.zeros(shape))
