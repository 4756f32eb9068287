"""The adaptive per-image token budget: counts follow content, batch-safe, exact at full budget."""
import math

import pytest
import torch
from conftest import tiny_vit_kwargs
from detectron2.utils.events import EventStorage
from test_model import _sample, tiny_mask_rcnn

from ailurus import AiluRusViT
from ailurus.clustering import AdaptiveBudget, cluster_tokens, local_dissimilarity

KNOBS = dict(cluster_layer=2, knn_k=3, radius=1, assign_radius=2)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def test_a_constant_image_gets_the_minimum_and_a_textured_one_more():
    x = torch.zeros(3, 12, 12, 16)
    x[0] = torch.randn(16)  # constant: every token alike
    x[1] = torch.randn(12, 12, 16)  # texture everywhere
    x[2, :, :6] = torch.randn(16)  # flat left half, textured right half
    x[2, :, 6:] = torch.randn(12, 6, 16)
    budget = AdaptiveBudget(threshold=0.5, min_keep=0.1, max_keep=0.8)
    c = cluster_tokens(x, 1, knn_k=3, radius=1, assign_radius=1, adaptive=budget)
    counts = c.counts.tolist()
    assert counts[0] == math.ceil(0.1 * 144)
    assert counts[1] == math.ceil(0.8 * 144)  # every token is detail: clipped at max_keep
    assert counts[0] < counts[2] < counts[1]
    # Detail is counted on unit-length features: scaling them changes nothing.
    assert torch.equal(local_dissimilarity(x * 100) >= 0.5, local_dissimilarity(x) >= 0.5)
    for b in range(3):  # used slots are valid clusters, the rest empty
        used = c.anchors[b, : counts[b]]
        assert torch.equal(c.assign[b, used], torch.arange(counts[b]))
        assert int(c.assign[b].max()) == counts[b] - 1 and c.assign[b].unique().numel() == counts[b]


def _model(**kwargs):
    return AiluRusViT(**tiny_vit_kwargs(), **KNOBS, budget="adaptive", **kwargs).eval()


def test_an_image_with_its_own_budget_does_not_depend_on_its_batch():
    model = _model(budget_threshold=0.05, min_keep=0.1, check_finite=False)
    images = torch.randn(4, 3, 112, 144)
    images[1] = 0.3  # constant
    images[2, :, :, 64:] = 0  # half padding
    images[3] = math.nan
    with torch.no_grad():
        tokens, state = model.forward_tokens(images)
        batched = model(images)["last_feat"]
        kept = state.tokens_per_image.tolist()
        assert kept[1] == math.ceil(0.1 * 63) < kept[2] < kept[0] == 63  # mixed budgets in one batch
        assert torch.isfinite(batched[:3]).all()
        for i in range(3):
            alone = model(images[i : i + 1])["last_feat"][0]
            assert _relative_error(alone, batched[i]) <= 1e-5


def test_full_budget_keeps_every_token_and_equals_the_baseline():
    model = _model(budget_threshold=0.0, max_keep=1.0)
    baseline = AiluRusViT(**tiny_vit_kwargs(), **KNOBS, enabled=False).eval()
    baseline.load_state_dict(model.state_dict())
    images = torch.randn(2, 3, 112, 144)
    images[1] = 0.5
    with torch.no_grad():
        _, state = model.forward_tokens(images)
        assert state.tokens_per_image.tolist() == [63, 63]
        assert _relative_error(baseline(images)["last_feat"], model(images)["last_feat"]) <= 1e-4


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(budget="dynamic"), "budget"), (dict(budget="adaptive", reducer="tome"), "budget"),
     (dict(budget_threshold=-0.1), "budget_threshold"), (dict(budget_threshold="0.1"), "budget_threshold"),
     (dict(min_keep=0.0), "min_keep"), (dict(min_keep=0.5, max_keep=0.4), "max_keep"),
     (dict(max_keep=1.5), "max_keep"), (dict(max_keep=math.nan), "max_keep")],
)
def test_invalid_budget_knobs_raise_naming_the_knob(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        AiluRusViT(**tiny_vit_kwargs(), **KNOBS, **kwargs)


def test_mask_rcnn_reports_tokens_kept_per_image_and_trains():
    model = tiny_mask_rcnn(["model.backbone.net.budget=adaptive", "model.backbone.net.budget_threshold=0.05"])
    flat = _sample()
    flat["image"] = torch.full_like(flat["image"], 90)
    model.train()
    with EventStorage():
        losses = model([_sample(), flat])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.backbone.net.blocks[-1].attn.qkv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        textured, constant = model([_sample(), flat])
    assert constant["tokens_kept"] < textured["tokens_kept"]
    assert "instances" in textured


def test_latency_times_batches_of_two_and_skips_a_single_image_set():
    import torch

    from ailurus.experiments.budget_study import latency

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Conv2d(3, 4, 3)

    models = {"fixed": Model()}
    assert latency(models, torch.randn(1, 3, 16, 16), [5]) == {}  # no batch of two to time
    out = latency(models, torch.randn(3, 3, 16, 16), [5, 1, 3], rounds=1)
    timings = {f"fixed_{p}_ms_per_image" for p in ("batch1", "batch2", "batch2_grouped")}
    assert set(out) == timings | {"other_cpu_share"}
    assert all(out[k] > 0 for k in timings)
    assert 0 <= out["other_cpu_share"] <= 1


def test_weights_digest_follows_the_weights_only():
    from ailurus.experiments.budget_study import weights_digest

    a = AiluRusViT(**tiny_vit_kwargs())
    b = AiluRusViT(**tiny_vit_kwargs(), keep_ratio=0.3)  # settings are not weights
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.blocks[0].mlp.fc1.bias[3] += 1e-6
    assert weights_digest(a) != weights_digest(b)
