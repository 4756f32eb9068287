"""Side-by-side speed and FLOPs: Detectron2's ViT, our backbone with AiluRus off, and on.

    python -m ailurus.benchmark --config-file configs/vitdet_ailurus.py --size 1024 --keep-ratio 0.5

All three are built from the same config with the same weights and run on the same real photo,
interleaved, warm-up excluded. The baseline is our backbone with ``enabled=False`` (same attention
kernels as the reduced path); Detectron2's stock ViT is timed too and reported separately.
"""
import argparse
import copy
import json
import logging
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import SimpleFeaturePyramid, ViT
from tabulate import tabulate
from tqdm import tqdm

from .flops import count_flops
from .images import SAMPLE_PHOTOS, model_input, sample_photo
from .pyramid import AiluRusSimpleFeaturePyramid
from .weights import load_config_weights
from .vit import AILURUS_ARGS, CLUSTER_EVENT, AiluRusViT, padding_tokens

logger = logging.getLogger("ailurus.benchmark")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="LazyConfig file with a ViTDet model")
    parser.add_argument("--size", type=int, default=1024, help="square canvas the photo is resized and padded to")
    parser.add_argument("--keep-ratio", type=float, default=None, help="AiluRus keep ratio (default: config's)")
    parser.add_argument("--cluster-layer", type=int, default=None, help="first reduced block (default: config's)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per model")
    parser.add_argument("--image", default="coffee", choices=SAMPLE_PHOTOS, help="scikit-image sample photo")
    parser.add_argument("--no-e2e", action="store_true", help="time the backbone only, not the whole Mask R-CNN")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random init when no checkpoint exists")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return parser.parse_args(argv)


def model_configs(cfg, args) -> Dict:
    """Model configs of the three variants, from one (baseline or AiluRus) ViTDet config."""
    base = copy.deepcopy(cfg.model)
    base.backbone.square_pad = args.size
    stock = copy.deepcopy(base)
    stock.backbone._target_, stock.backbone.net._target_ = SimpleFeaturePyramid, ViT
    for key in AILURUS_ARGS:
        stock.backbone.net.pop(key, None)
    ours = copy.deepcopy(base)
    ours.backbone._target_, ours.backbone.net._target_ = AiluRusSimpleFeaturePyramid, AiluRusViT
    if args.keep_ratio is not None:
        ours.backbone.net.keep_ratio = args.keep_ratio
    if args.cluster_layer is not None:
        ours.backbone.net.cluster_layer = args.cluster_layer
    baseline, ailurus = copy.deepcopy(ours), copy.deepcopy(ours)
    baseline.backbone.net.enabled, ailurus.backbone.net.enabled = False, True
    return {"detectron2": stock, "baseline": baseline, "ailurus": ailurus}


def build_models(cfg, args) -> Tuple[Dict[str, torch.nn.Module], str]:
    """The three models with identical weights: the config's checkpoint if present, else random."""
    torch.manual_seed(args.seed)
    models = {name: instantiate(c).eval() for name, c in model_configs(cfg, args).items()}
    weights = load_config_weights([models["baseline"], models["ailurus"], models["detectron2"]], cfg)
    return models, weights


def _time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def _cluster_ms(backbone: torch.nn.Module, images: torch.Tensor) -> float:
    """Time of the clustering step inside a (separate, profiled) AiluRus forward."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        backbone(images)
    return sum(e.cpu_time_total for e in prof.events() if e.name == CLUSTER_EVENT) / 1e3


def run(args) -> Dict:
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    models, weights = build_models(cfg, args)
    ail = models["ailurus"]
    net: AiluRusViT = ail.backbone.net
    inputs = model_input(sample_photo(args.image), args.size, ail.input_format)
    with torch.no_grad():
        images = ail.preprocess_image([inputs]).tensor  # normalised, padded to the square canvas
        _, state = ail.backbone.forward_with_state(images)
    is_pad = padding_tokens(images, net.patch_embed.proj.kernel_size)

    times: Dict[str, List[float]] = {k: [] for k in ("detectron2", "baseline", "ailurus", "cluster", "e2e_baseline", "e2e_ailurus")}
    with torch.no_grad():
        for step in tqdm(range(args.warmup + args.iters), desc="benchmark (interleaved)", unit="round"):
            round_ms = {name: _time_ms(lambda m=m: m.backbone(images)) for name, m in models.items()}
            round_ms["cluster"] = _cluster_ms(ail.backbone, images)
            if not args.no_e2e:
                for name in ("baseline", "ailurus"):
                    round_ms[f"e2e_{name}"] = _time_ms(lambda m=models[name]: m([inputs]))
            if step >= args.warmup:
                for key, value in round_ms.items():
                    times[key].append(value)
    ms = {k: statistics.median(v) for k, v in times.items() if v}

    logger.info("counting FLOPs (tracing the three backbones)")
    gflops = {name: count_flops(m.backbone, (images,))[0] / 1e9 for name, m in models.items()}
    anchor_rc = state.positions[0]
    pad_grid = is_pad[0]
    result = {
        "config": args.config_file,
        "image": args.image,
        "size": args.size,
        "weights": weights,
        "keep_ratio": net.keep_ratio,
        "cluster_layer": net.cluster_layer,
        "tokens_before": int(state.grid_hw[0] * state.grid_hw[1]),
        "tokens_after": int(state.positions.shape[1]),
        "padding_tokens": int(pad_grid.sum()),
        "anchors_on_padding": int(pad_grid[anchor_rc[:, 0], anchor_rc[:, 1]].sum()),
        "backbone_ms_detectron2": ms["detectron2"],
        "backbone_ms_baseline": ms["baseline"],
        "backbone_ms_ailurus": ms["ailurus"],
        "cluster_ms": ms["cluster"],
        "cluster_share": ms["cluster"] / ms["ailurus"],
        "backbone_speedup": ms["baseline"] / ms["ailurus"],
        "speedup_vs_detectron2": ms["detectron2"] / ms["ailurus"],
        "detectron2_vs_baseline": ms["detectron2"] / ms["baseline"],
        "gflops_detectron2": gflops["detectron2"],
        "gflops_baseline": gflops["baseline"],
        "gflops_ailurus": gflops["ailurus"],
        "flops_ratio": gflops["baseline"] / gflops["ailurus"],
        "torch_threads": torch.get_num_threads(),
        "iters": args.iters,
    }
    if not args.no_e2e:
        result.update(
            e2e_ms_baseline=ms["e2e_baseline"],
            e2e_ms_ailurus=ms["e2e_ailurus"],
            e2e_speedup=ms["e2e_baseline"] / ms["e2e_ailurus"],
        )
    return result


def report(result: Dict) -> str:
    rows = [
        ["Detectron2 ViT (eager)", result["tokens_before"], result["gflops_detectron2"], result["backbone_ms_detectron2"], None],
        ["baseline (AiluRus off)", result["tokens_before"], result["gflops_baseline"], result["backbone_ms_baseline"], result.get("e2e_ms_baseline")],
        ["AiluRus", result["tokens_after"], result["gflops_ailurus"], result["backbone_ms_ailurus"], result.get("e2e_ms_ailurus")],
    ]
    table = tabulate(rows, headers=["backbone", "tokens", "GFLOPs", "backbone ms", "end-to-end ms"], floatfmt=".1f")
    lines = [
        f"{result['config']}  photo={result['image']}  canvas={result['size']}  keep={result['keep_ratio']}  "
        f"cluster_layer={result['cluster_layer']}  threads={result['torch_threads']}  weights: {result['weights']}",
        table,
        f"backbone speed-up {result['backbone_speedup']:.2f}x (same kernels) | FLOPs ratio {result['flops_ratio']:.2f}x | "
        f"vs Detectron2 ViT {result['speedup_vs_detectron2']:.2f}x (Detectron2 / baseline {result['detectron2_vs_baseline']:.2f}x)",
        f"clustering {result['cluster_ms']:.1f} ms = {100 * result['cluster_share']:.1f}% of AiluRus backbone | "
        f"anchors on padding {result['anchors_on_padding']} of {result['tokens_after']} ({result['padding_tokens']} padding tokens)",
    ]
    if "e2e_speedup" in result:
        lines.append(f"end-to-end Mask R-CNN speed-up {result['e2e_speedup']:.2f}x")
    return "\n".join(lines)


def main(argv=None) -> Dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    result = run(args)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
