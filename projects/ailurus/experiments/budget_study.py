"""The adaptive-budget stage of the accuracy study (``python -m ailurus.experiments.study --adaptive-keeps ...``).

For each fixed keep ratio k, the adaptive budget's threshold is calibrated so that its mean token
count over the val images equals the fixed budget's M (bisection; the counts follow from the
per-token dissimilarities exactly, so no AP and no label is used), then the same weights are
evaluated with it. Latency (backbone, interleaved, median) is measured on the val images at
batch 1, at batch 2 in dataset order (the image with more tokens sets the padded size), and at
batch 2 with images paired by their token counts; per image: tokens kept and edge density.
"""
import hashlib
import os
import statistics
import time
from typing import Dict, List, Sequence

import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog

from ailurus.clustering import AdaptiveBudget, adaptive_budget, lattice_level, local_dissimilarity, num_clusters_for

from .benchmark import CpuWatch
from .runner import cached, load_model, resolved_settings
from .views import with_settings


def val_images(cfg, model, limit: int = 20) -> List[Dict]:
    """The first ``limit`` val images as model inputs."""
    mapper = instantiate(cfg.dataloader.test.mapper)
    return [mapper(r) for r in DatasetCatalog.get(cfg.dataloader.test.dataset.names)[:limit]]


def edge_density(image: torch.Tensor) -> float:
    """Mean Sobel gradient magnitude of the grey image, in [0, 1] of the pixel range."""
    grey = image.float().mean(0).numpy() / 255.0
    gy, gx = np.gradient(grey)
    return float(np.hypot(gx, gy).mean())


def calibrate(model, images: torch.Tensor, target_tokens: float, min_keep: float, max_keep: float) -> float:
    """The threshold whose adaptive budget keeps ``target_tokens`` tokens per image on average.

    Args:
        images: (B, 3, S, S) preprocessed val images.
    """
    net = model.backbone.net
    with torch.no_grad():
        grid, is_pad = net.grid_tokens(images, net.cluster_layer)
    B, H, W, _ = grid.shape
    dis = local_dissimilarity(grid)  # (B, N)
    is_pad = is_pad.reshape(B, -1)
    level = lattice_level(H, W, 2 * net.assign_radius + 1, grid.device)

    def mean_tokens(threshold: float) -> float:  # the counts the clustering itself would give
        takes = adaptive_budget(dis >= threshold, is_pad, level, AdaptiveBudget(threshold, min_keep, max_keep))
        return float(sum(takes).double().mean())

    lo, hi = 0.0, 4.0  # mean_tokens falls as the threshold rises
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_tokens(mid) > target_tokens else (lo, mid)
    return hi


def _median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def latency(models: Dict[str, torch.nn.Module], images: torch.Tensor, kept: Sequence[int], rounds: int = 3) -> Dict:
    """Backbone ms per image of each model at batch 1, batch 2 in order, batch 2 paired by ``kept``,
    and ``other_cpu_share``, the CPU share other processes used meanwhile (``benchmark.CpuWatch``), so
    that the study can mark contended timings (nothing for a val set of one image: there is no batch
    of two to time)."""
    n = images.shape[0] - images.shape[0] % 2
    if n == 0:
        return {}
    paired = torch.as_tensor(sorted(range(n), key=lambda i: kept[i]))
    plans = {"batch1": [images[i : i + 1] for i in range(n)],
             "batch2": [images[i : i + 2] for i in range(0, n, 2)],
             "batch2_grouped": [images[paired[i : i + 2]] for i in range(0, n, 2)]}
    out = {}
    watch = CpuWatch()
    with torch.no_grad():
        for _ in range(1):  # warm-up
            for m in models.values():
                m.backbone(images[:2])
        for plan, batches in plans.items():
            for name, m in models.items():
                out[f"{name}_{plan}_ms_per_image"] = _median_ms(lambda: [m.backbone(b) for b in batches], rounds) / n
    return {**out, "other_cpu_share": watch.other_share()}


def weights_digest(module: torch.nn.Module) -> str:
    """A short hash of ``module``'s state (names, shapes, dtypes and values)."""
    h = hashlib.sha1()
    for name, t in module.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def run_budget(config: str, weights: str, opts: Sequence[str], keeps: Sequence[float], evaluate,
               seed_dir: str, shared_dir: str) -> List[Dict]:
    """Rows of the adaptive budget at each fixed keep's mean token count (AP by ``evaluate(config,
    weights, opts, output_dir)``), and its latency study; every stage cached under ``seed_dir``,
    except the latency study: its token counts and timings follow from the ViT's weights alone, so
    it is cached under ``shared_dir`` by their hash, once for all seeds of a frozen backbone."""
    cfg, model = load_model(config, weights, list(opts) + ["model.backbone.net.enabled=True"])
    inputs = val_images(cfg, model)
    with torch.no_grad():
        images = model.preprocess_image(inputs).tensor
    net = model.backbone.net
    N = (images.shape[-2] // net.patch_embed.proj.kernel_size[0]) * (images.shape[-1] // net.patch_embed.proj.kernel_size[1])
    digest = weights_digest(net)
    rows = []
    for keep in keeps:
        target = num_clusters_for(N, keep)
        threshold = cached(os.path.join(seed_dir, "eval", f"adaptive_keep{keep}_threshold.json"),
                           lambda: {"threshold": calibrate(model, images, target, net.min_keep, net.max_keep)})["threshold"]
        adaptive_opts = ["model.backbone.net.budget=adaptive", f"model.backbone.net.budget_threshold={threshold}"]
        key = f"adaptive_keep{keep}_L{net.cluster_layer}"
        eval_opts = list(opts) + ["model.backbone.net.enabled=True"] + adaptive_opts
        ev = cached(os.path.join(seed_dir, "eval", f"{key}.json"),
                    lambda: evaluate(config, weights, eval_opts, os.path.join(seed_dir, "eval", key)),
                    resolved_settings(config, eval_opts))

        def measure() -> Dict:
            adaptive = with_settings(model, budget="adaptive", budget_threshold=threshold)
            with torch.no_grad():
                per_image = [int(adaptive.backbone.forward_with_state(images[i : i + 1])[1].tokens_per_image[0])
                             for i in range(images.shape[0])]
            models = {"baseline": with_settings(model, enabled=False), "fixed": with_settings(model, keep_ratio=keep),
                      "adaptive": adaptive}
            return {"tokens_per_image": per_image, "edge_density": [edge_density(x["image"]) for x in inputs],
                    **latency(models, images, per_image)}

        per_seed = os.path.join(seed_dir, "eval", f"{key}_latency.json")  # where studies before the shared cache kept it
        timing = cached(per_seed if os.path.isfile(per_seed) else
                        os.path.join(shared_dir, "adaptive_latency", f"{key}_{digest}.json"), measure)
        rows.append({"reducer": "ailurus", "budget": "adaptive", "keep_ratio": keep, "budget_threshold": threshold,
                     "cluster_layer": net.cluster_layer, "unfold": net.unfold_mode, "fine_tuned": False,
                     "fixed_tokens": target, **ev, **timing,
                     "backbone_speedup": timing["baseline_batch1_ms_per_image"] / timing["adaptive_batch1_ms_per_image"],
                     "fixed_backbone_speedup": timing["baseline_batch1_ms_per_image"] / timing["fixed_batch1_ms_per_image"],
                     "e2e_speedup": None})  # only the backbone is timed here
    return rows
