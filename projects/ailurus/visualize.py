"""Draw AiluRus clusters over a photo.

    python -m ailurus.visualize --config-file configs/vitdet_ailurus.py --image coffee --out clusters.png

Left: the model's input canvas with cluster borders and anchors; right: every cluster painted
with its mean colour, which shows the resolution each region kept.
"""
import argparse
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw

from .reduced import ReducedState


def cluster_figure(rgb: np.ndarray, state: ReducedState, patch: int, title: Optional[str] = None) -> Image.Image:
    """Side-by-side picture of one image's clusters.

    Args:
        rgb: (h, w, 3) uint8, the image as fed to the model, before its canvas padding.
        state: the clustering state of a batch whose first image is ``rgb``.
        patch: patch size in pixels.
    """
    H, W = state.grid_hw
    canvas = np.full((H * patch, W * patch, 3), 40, dtype=np.uint8)  # padding shown dark grey
    canvas[: rgb.shape[0], : rgb.shape[1]] = rgb[: H * patch, : W * patch]
    assign = state.assign[0].reshape(H, W).cpu().numpy() if not state.is_grid else np.arange(H * W).reshape(H, W)
    labels = assign.repeat(patch, 0).repeat(patch, 1)

    # mean colour of each cluster
    M = int(labels.max()) + 1
    flat = labels.reshape(-1)
    counts = np.bincount(flat, minlength=M)[:, None].clip(min=1)
    means = np.stack([np.bincount(flat, canvas[..., c].reshape(-1), minlength=M) for c in range(3)], -1) / counts
    mosaic = means[labels].astype(np.uint8)

    border = np.zeros(labels.shape, dtype=bool)
    border[:-1] |= labels[:-1] != labels[1:]
    border[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    overlay = canvas.copy()
    overlay[border] = (255, 255, 0)

    both = Image.fromarray(np.concatenate([overlay, mosaic], 1))
    draw = ImageDraw.Draw(both)
    for r, c in state.positions[0].tolist():
        cy, cx = r * patch + patch // 2, c * patch + patch // 2
        draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=(255, 0, 0))
    if title:
        draw.rectangle([0, 0, 8 * len(title) + 10, 18], fill=(0, 0, 0))
        draw.text((5, 3), title, fill=(255, 255, 255))
    return both


def model_clusters_figure(model, inputs: dict, label: str) -> Image.Image:
    """Run an AiluRus Mask R-CNN's backbone on one Detectron2 input dict and draw its clusters.

    Args:
        model: a ``GeneralizedRCNN`` whose backbone is an ``AiluRusSimpleFeaturePyramid``.
        inputs: {"image": (3, h, w) uint8 tensor in the model's input format, ...}.
        label: what the picture shows, put before the token counts in its title.
    """
    with torch.no_grad():
        _, state = model.backbone.forward_with_state(model.preprocess_image([inputs]).tensor)
    rgb = inputs["image"].permute(1, 2, 0).numpy().astype(np.uint8)
    if model.input_format == "BGR":
        rgb = rgb[:, :, ::-1]
    net = model.backbone.net
    title = (f"{label}: {state.positions.shape[1]} of {state.grid_hw[0] * state.grid_hw[1]} tokens, "
             f"keep {net.keep_ratio}, after block {net.cluster_layer - 1}")
    return cluster_figure(rgb, state, net.patch_embed.proj.kernel_size[0], title)


def main(argv=None) -> str:
    from detectron2.config import LazyConfig, instantiate

    from .images import SAMPLE_PHOTOS, model_input, sample_photo
    from .weights import load_config_weights

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--image", default="coffee", choices=SAMPLE_PHOTOS)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--out", default="clusters.png")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)

    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    cfg.model.backbone.square_pad = args.size
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    load_config_weights([model], cfg)
    inputs = model_input(sample_photo(args.image), args.size, model.input_format)
    model_clusters_figure(model, inputs, f"photo '{args.image}'").save(args.out)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
