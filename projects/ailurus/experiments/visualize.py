"""Draw the clusters of AiluRus (and of its peers) over an image.

    python -m ailurus.experiments.visualize --config-file configs/vitdet_ailurus.py --input photo.jpg --out clusters.png
    python -m ailurus.experiments.visualize --config-file C --input coffee --keep-ratio 0.5 0.25 --reducer ailurus tome pool
    python -m ailurus.experiments.visualize --config-file C --input a.jpg b.jpg c.jpg model.backbone.net.budget=adaptive

One setting: left, the model's input canvas with cluster borders (yellow) and anchors (red);
right, every cluster painted with its mean colour, which shows the resolution each region kept.
Several images, keep ratios or reducers: a grid of canvases, one row per reducer and one column
per (image, keep ratio), from the same weights; each title gives the tokens that image kept, which
differ per image with ``model.backbone.net.budget=adaptive``.
"""
import argparse
import os
import sys
from typing import List, Optional

import numpy as np
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data.detection_utils import read_image
from PIL import Image, ImageDraw

from ailurus.checkpoint import load_config_weights
from ailurus.reducers import REDUCERS
from ailurus.tokens import TokenState

from .images import SAMPLE_PHOTOS, model_input, sample_photo
from .views import with_settings


def cluster_figure(rgb: np.ndarray, state: TokenState, patch: int, title: Optional[str] = None,
                   with_mosaic: bool = True) -> Image.Image:
    """Side-by-side picture of one image's clusters.

    Args:
        rgb: (h, w, 3) uint8, the image as fed to the model, before its canvas padding.
        state: the clustering state of a batch whose first image is ``rgb``.
        patch: patch size in pixels.
        with_mosaic: add the mean-colour picture on the right.
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

    both = Image.fromarray(np.concatenate([overlay, mosaic], 1) if with_mosaic else overlay)
    draw = ImageDraw.Draw(both)
    for r, c in state.positions[0].tolist():
        cy, cx = r * patch + patch // 2, c * patch + patch // 2
        draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=(255, 0, 0))
    if title:
        draw.rectangle([0, 0, 8 * len(title) + 10, 18], fill=(0, 0, 0))
        draw.text((5, 3), title, fill=(255, 255, 255))
    return both


def model_clusters_figure(model, inputs: dict, label: str, with_mosaic: bool = True) -> Image.Image:
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
    budget = (f"adaptive budget (threshold {net.budget_threshold})" if net.budget == "adaptive"
              else f"keep {net.keep_ratio}")
    title = (f"{label}: {int(state.tokens_per_image[0])} of {state.grid_hw[0] * state.grid_hw[1]} tokens, "
             f"{budget}, cluster_layer {net.cluster_layer}")
    return cluster_figure(rgb, state, net.patch_embed.proj.kernel_size[0], title, with_mosaic)


def grid_figure(panels: List[List[Image.Image]]) -> Image.Image:
    """Panels (rows of equal-size pictures) pasted into one picture with a small gap."""
    w, h = panels[0][0].size
    gap = 6
    out = Image.new("RGB", (len(panels[0]) * (w + gap) - gap, len(panels) * (h + gap) - gap), (255, 255, 255))
    for i, row in enumerate(panels):
        for j, panel in enumerate(row):
            out.paste(panel, (j * (w + gap), i * (h + gap)))
    return out


def read_input(spec: str) -> np.ndarray:
    """(h, w, 3) uint8 RGB: a scikit-image sample photo by name, or an image file."""
    if spec in SAMPLE_PHOTOS:
        return sample_photo(spec)
    if not os.path.isfile(spec):
        raise SystemExit(f"visualize: error: --input {spec!r} is neither an image file nor one of the sample "
                         f"photos ({', '.join(SAMPLE_PHOTOS)}).")
    try:
        return np.ascontiguousarray(read_image(spec, format="RGB"))
    except Exception as e:  # PIL raises several types for unreadable files
        raise SystemExit(f"visualize: error: cannot read {spec!r} as an image ({e}).")


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", "--image", dest="inputs", nargs="+", default=["coffee"],
                        help="image files, or scikit-image sample photos by name; several: side by side")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--keep-ratio", dest="keep_ratios", nargs="+", type=float, default=None,
                        help="one column per keep ratio (default: the config's)")
    parser.add_argument("--reducer", dest="reducers", nargs="+", default=None, choices=sorted(REDUCERS),
                        help="one row per reducer (default: the config's)")
    parser.add_argument("--out", default="clusters.png")
    parser.add_argument("opts", nargs="*", help="config overrides key=value, anywhere on the line")
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])

    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), overrides)
    cfg.model.backbone.square_pad = args.size
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    load_config_weights([model], cfg)
    images = [(os.path.basename(spec), model_input(read_input(spec), args.size, model.input_format))
              for spec in args.inputs]
    if args.keep_ratios is None and args.reducers is None and len(images) == 1:
        name, inputs = images[0]
        model_clusters_figure(model, inputs, f"'{name}'").save(args.out)
    else:
        keeps = args.keep_ratios or [model.backbone.net.keep_ratio]
        reducers = args.reducers or [model.backbone.net.reducer]
        # one row per reducer; columns: every image at every keep ratio (titles give each image's count)
        panels = [[model_clusters_figure(with_settings(model, enabled=True, reducer=r, keep_ratio=k), inputs,
                                         f"{r} '{name}'", with_mosaic=False)
                   for name, inputs in images for k in keeps] for r in reducers]
        grid_figure(panels).save(args.out)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
