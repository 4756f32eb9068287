"""Property-based: on any valid input the tiny AiluRus ViT gives one finite output of the right
shape per image, independent of the rest of the batch."""
import torch
from conftest import tiny_vit_kwargs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ailurus import AiluRusViT


@st.composite
def settings_and_images(draw):
    depth = 3
    cluster_layer = draw(st.integers(1, depth - 1))
    radius = draw(st.integers(1, 2))
    model_kwargs = dict(
        cluster_layer=cluster_layer,
        keep_ratio=draw(st.floats(0.01, 1.0)),
        num_clusters=draw(st.one_of(st.none(), st.integers(1, 40))),
        radius=radius,
        knn_k=draw(st.integers(1, (radius + 1) ** 2 - 1)),
        assign_radius=draw(st.integers(0, 3)),
        unfold=draw(st.sampled_from(["copy", "residual"])),
        enabled=draw(st.booleans()),
        span_windows=draw(st.booleans()),
    )
    vit_kwargs = tiny_vit_kwargs(
        depth=depth,
        embed_dim=32,
        num_heads=2,
        window_size=draw(st.integers(2, 4)),
        window_block_indexes=draw(st.lists(st.integers(0, depth - 1), unique=True)),
        use_rel_pos=draw(st.booleans()),
    )
    batch = draw(st.integers(1, 3))
    height, width = draw(st.integers(16, 150)), draw(st.integers(16, 150))  # odd, tiny, any aspect ratio
    kind = draw(st.sampled_from(["random", "constant", "padded"]))
    seed = draw(st.integers(0, 2**16))
    return vit_kwargs, model_kwargs, (batch, height, width), kind, seed


def _images(shape, kind, seed):
    batch, height, width = shape
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, height, width, generator=g)
    if kind == "constant":
        images = torch.full_like(images, 0.7)
    elif kind == "padded":
        images[:, :, height // 2 :] = 0
    return images


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_and_images())
def test_valid_inputs_give_finite_batch_independent_outputs(case):
    vit_kwargs, model_kwargs, shape, kind, seed = case
    torch.manual_seed(seed)
    model = AiluRusViT(**vit_kwargs, **model_kwargs).eval()
    images = _images(shape, kind, seed)
    with torch.no_grad():
        out = model(images)["last_feat"]
    batch, height, width = shape
    assert out.shape == (batch, 32, height // 16, width // 16)
    assert torch.isfinite(out).all()
    with torch.no_grad():
        for i in range(batch):
            alone = model(images[i : i + 1])["last_feat"][0]
            scale = out[i].abs().max().clamp_min(1e-6)
            assert ((alone - out[i]).abs().max() / scale).item() <= 1e-5
