"""Why small canvases lose more: the AiluRus AP drop on an image cut into tiles (each its own
canvas) and on the whole image (a canvas it fills), with the differences between the two switched
on one at a time (docs/study.md, "Why small canvases lose more").

    python -m ailurus.experiments.factors --seeds 0 1 2 [key=value ...]

On the nuclei val half (``ailurus_nuclei_val_whole`` at 512 x 1024 against its eight 256 px tiles,
``ailurus_nuclei_val``: the same pixels at the same scale, with the study's frozen-backbone weights),
the tiles differ from the whole image in:

- **budget**: each tile gets keep x its tokens, whatever its content; on the whole image the
  clusters go where the content is (``budget_block``: cluster each tile-sized block of the whole
  image on its own, with its own budget);
- **context**: the global blocks see one tile (``context_block``: global blocks attend within
  tile-sized blocks of the whole image);
- **cut objects and per-tile heads**: objects that cross a tile border are cut there, and proposals
  and detections are per tile: what is left between "whole image with the tiles' budget and
  context" and the tiles themselves;
- **proposal and detection counts**: the tiles keep 100 proposals and 100 detections each; the
  tiles are also run with the whole image's counts per tile area (1000 / 8 proposals, 300 / 8
  detections) and with ten times the proposals;
- **window layout and tokens per window**: the model's 8 x 8 windows tile a 16 x 16 tile and the
  32 x 64 grid exactly, so in the model as trained neither differs. Both are run again with
  ViTDet's 14 x 14 windows (a tile's grid padded to 28 x 28, 67% window padding; the whole grid to
  42 x 70, 30%) and with 16 x 16 windows (one window per tile, 4x the tokens per window).

One more condition puts the whole image on the square 1024 canvas the earlier 1024 px study used
(half of it padding), to see what the padding did there. Every evaluation is cached under
``--work-dir``; rows go to ``reports/factors.json`` and ``reports/factors.md``.
"""
import argparse
import json
import os
import statistics
import sys
from typing import Dict, List, Sequence

import torch

from ailurus.clustering import Clusters
from ailurus.vit import AiluRusViT

from .runner import REPO, cached, resolved_settings
from .study import STUDY_CONFIGS, evaluate_row, spread

TILE_TOKENS = 16  # a 256 px tile of 16 px patches
BLOCKWISE = f"{__name__}.BlockwiseViT"
# (name, config, overrides): from the whole image to the tiles, one difference at a time.
CONDITIONS = [
    ("whole", "nuclei_1024_filled", []),
    ("whole, square canvas, half padding", "nuclei_1024_filled", ["model.backbone.square_pad=1024"]),
    ("whole, tile budget", "nuclei_1024_filled", [f"model.backbone.net.budget_block={TILE_TOKENS}"]),
    ("whole, tile context", "nuclei_1024_filled", [f"model.backbone.net.context_block={TILE_TOKENS}"]),
    ("whole, tile budget and context", "nuclei_1024_filled",
     [f"model.backbone.net.budget_block={TILE_TOKENS}", f"model.backbone.net.context_block={TILE_TOKENS}"]),
    ("tiles", "nuclei", []),
    ("tiles, area-matched counts", "nuclei",
     ["model.proposal_generator.post_nms_topk=[300,125]", "model.roi_heads.box_predictor.test_topk_per_image=38"]),
    ("tiles, 10x the proposals", "nuclei",
     ["model.proposal_generator.pre_nms_topk=[600,2000]", "model.proposal_generator.post_nms_topk=[300,1000]"]),
    ("whole, 14 x 14 windows", "nuclei_1024_filled", ["model.backbone.net.window_size=14"]),
    ("tiles, 14 x 14 windows", "nuclei", ["model.backbone.net.window_size=14"]),
    ("whole, 16 x 16 windows", "nuclei_1024_filled", ["model.backbone.net.window_size=16"]),
    ("tiles, 16 x 16 windows", "nuclei", ["model.backbone.net.window_size=16"]),
]


class BlockwiseViT(AiluRusViT):
    """``AiluRusViT`` with the tiles' budget and context on a whole image (analysis only).

    Args:
        budget_block: > 0 clusters each ``budget_block`` x ``budget_block`` block of the token grid on
            its own, with ``keep_ratio`` of its tokens, as if it were a tile (H and W must be multiples).
        context_block: > 0 makes the global blocks attend within blocks of this side.
    """

    def __init__(self, *, budget_block: int = 0, context_block: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.budget_block = budget_block
        for block in self.blocks:
            if context_block and not block.window_size:
                block.window_size = context_block

    def find_clusters(self, x: torch.Tensor, is_pad: torch.Tensor, later_blocks) -> Clusters:
        """Clusters of ``x`` (B, H, W, C), block by block when ``budget_block`` is set."""
        t = self.budget_block
        B, H, W, C = x.shape
        if not t:
            return super().find_clusters(x, is_pad, later_blocks)
        if H % t or W % t:
            raise ValueError(f"budget_block={t} must divide the {H} x {W} token grid")
        nh, nw = H // t, W // t
        blocks = x.reshape(B, nh, t, nw, t, C).permute(0, 1, 3, 2, 4, 5).reshape(B * nh * nw, t, t, C)
        block_pad = is_pad.reshape(B, nh, t, nw, t).permute(0, 1, 3, 2, 4).reshape(B * nh * nw, t, t)
        local = super().find_clusters(blocks, block_pad, later_blocks)  # M_b = clusters_for(t * t) each
        M_b = local.anchors.shape[1]
        block = torch.arange(B * nh * nw, device=x.device)[:, None] % (nh * nw)
        rows = (block // nw) * t + local.anchors // t
        cols = (block % nw) * t + local.anchors % t
        anchors = (rows * W + cols).reshape(B, nh * nw * M_b)
        assign = (local.assign + block * M_b).reshape(B, nh, nw, t, t).permute(0, 1, 3, 2, 4).reshape(B, H * W)
        return Clusters(anchors=anchors, assign=assign)


def condition_rows(name: str, dataset: str, overrides: Sequence[str], keeps: Sequence[float], seed: int,
                   work_dir: str, opts: Sequence[str]) -> List[Dict]:
    """The condition's AP with AiluRus off and at each keep ratio, for one seed's study weights."""
    weights = os.path.join(work_dir, "nuclei", f"seed{seed}", "baseline", "model_final.pth")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights} is missing: train it with `python -m ailurus.experiments.study "
                                f"--datasets nuclei --seeds {seed}`")
    base = [f"model.backbone.net._target_={BLOCKWISE}", *overrides, *opts]  # without blocks: AiluRusViT exactly
    rows = []
    for keep in [None, *keeps]:
        knobs = ["model.backbone.net.enabled=False"] if keep is None else [
            "model.backbone.net.enabled=True", f"model.backbone.net.keep_ratio={keep}"]
        key = f"{name.replace(', ', '_').replace(' ', '-')}_{'off' if keep is None else f'keep{keep}'}"
        out = os.path.join(work_dir, "factors", f"seed{seed}", key)
        row = cached(os.path.join(out, "eval.json"),
                     lambda: evaluate_row(STUDY_CONFIGS[dataset], weights, [*base, *knobs], out),
                     resolved_settings(STUDY_CONFIGS[dataset], [*base, *knobs]))
        rows.append(dict(condition=name, dataset=dataset, seed=seed, keep=keep, **row))
    return rows


def markdown(rows: List[Dict]) -> str:
    """Mask AP change against AiluRus off in the same condition, mean +- sd over seeds."""
    off = {(r["condition"], r["seed"]): r for r in rows if r["keep"] is None}
    keeps = sorted({r["keep"] for r in rows if r["keep"] is not None}, reverse=True)
    lines = ["| condition | mask AP off | " + " | ".join(f"mask AP change, keep {k}" for k in keeps)
             + " | image keep ratio | seeds |", "|---|---|" + "---|" * len(keeps) + "---|---|"]
    for name, _, _ in CONDITIONS:
        mine = [r for r in rows if r["condition"] == name]
        if not mine:
            continue
        cells = []
        for k in keeps:
            changes = [r["mask_ap"] - off[name, r["seed"]]["mask_ap"] for r in mine if r["keep"] == k]
            cells.append(spread(changes) if changes else "")
        seeds = sorted({r["seed"] for r in mine})
        base_ap = spread([off[name, s]["mask_ap"] for s in seeds]).lstrip("+")
        ratio = statistics.mean(r["image_keep_ratio"] for r in mine if r["keep"] == keeps[0])
        lines.append(f"| {name} | {base_ap} | " + " | ".join(cells) + f" | {ratio:.2f} (keep {keeps[0]}) | {len(seeds)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--keeps", type=float, nargs="+", default=[0.5, 0.35, 0.25])
    parser.add_argument("--work-dir", default=os.path.join("output", "study"))
    parser.add_argument("--reports", default=os.path.join(REPO, "reports"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value for every evaluation")
    args = parser.parse_args(argv)
    rows = [r for seed in args.seeds for name, dataset, overrides in CONDITIONS
            for r in condition_rows(name, dataset, overrides, args.keeps, seed, args.work_dir, args.opts)]
    os.makedirs(args.reports, exist_ok=True)
    with open(os.path.join(args.reports, "factors.json"), "w") as f:
        command = " ".join(["python -m ailurus.experiments.factors", *(sys.argv[1:] if argv is None else argv)])
        json.dump({"command": command, "rows": rows}, f, indent=1)
    table = markdown(rows)
    with open(os.path.join(args.reports, "factors.md"), "w") as f:
        f.write(table)
    print(table)
    return rows


if __name__ == "__main__":
    main()
