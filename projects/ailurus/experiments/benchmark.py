"""Every reducer against the same backbone, side by side: speed, FLOPs, memory and (optionally) AP.

    python -m ailurus.experiments.benchmark --config-file configs/vitdet_s_ailurus.py configs/vitdet_ailurus.py \\
        --sizes 512 768 1024 --batches 1 2 --reducers ailurus tome tome_window expedite pool \\
        --keep-ratios 0.5 0.35 --train-step --memory --json reports/benchmark.json --report reports

For each config, canvas size and batch, one model is built (weights: the config's
``train.init_checkpoint`` if the file exists, else a seeded random init) and every setting
(reducer x keep ratio x cluster layer, and the baseline with AiluRus off) is a view of it that
shares every parameter. Settings are timed in the same process, interleaved round by round,
warm-up rounds excluded: backbone forward, end-to-end Mask R-CNN inference, and with
``--train-step`` one training step (forward, backward, AdamW step at learning rate 0, so the
weights stay as they are). ``--compile`` adds the backbone compiled by ``torch.compile`` (inductor;
compilation happens in the warm-up round, so it needs ``--warmup`` >= 1), ``--onnxruntime`` the
backbone exported to ONNX (``ailurus.export``) and run by onnxruntime, each setting against the
baseline run the same way. FLOPs are counted by fvcore with handles for every op a reducer uses;
``--memory`` adds peak memory of inference and (with ``--train-step``) of a training step, each
setting measured in a fresh process of its own after one warm-up run, so the order of settings
cannot bias it (CUDA: the allocator's peak; CPU: the peak resident-set growth, after returning free
heap memory to the system); ``--eval`` adds COCO box / mask AP on the config's test set. Inputs are
scikit-image photos or an image file (``--image``, then the other photos for larger batches),
resized to the canvas and padded like Detectron2 does: to a square (ViTDet's ``square_pad``), or
with ``--own-aspect`` only to the pyramid's coarsest stride (as without ``square_pad``).

Output: one row per measured setting (``rows``), printed as a table; ``--json`` writes them. Times
are medians over the timed rounds, speed-ups the ratio of those medians, and ``*_speedup_range`` the
lowest and highest speed-up within a single round (CPU timings drift between runs by 0.2x or more).
``other_cpu_share`` is the share of the machine's CPU time that other processes used while the
settings were timed; above ``BUSY_SHARE`` the run warns that its timings are slowed and noisy.
``--report DIR`` writes ``benchmark.md`` and the plots there (``ailurus.experiments.benchmark_report``).
"""
import argparse
import copy
import ctypes
import gc
import json
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from itertools import product
from typing import Callable, Dict, List, Optional, Sequence

import psutil
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import SimpleFeaturePyramid, ViT
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from tqdm import tqdm

from ailurus.checkpoint import load_config_weights
from ailurus.export import export_backbone
from ailurus.pyramid import AiluRusSimpleFeaturePyramid
from ailurus.reducers import REDUCERS
from ailurus.settings import SETTING_NAMES
from ailurus.vit import AiluRusViT

from .benchmark_report import write_report
from .flops import count_flops
from .images import SAMPLE_PHOTOS, model_input, sample_photo
from .runner import evaluate
from .views import with_settings

logger = logging.getLogger("ailurus.experiments.benchmark")


AMP_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
# Share of the machine's CPU time other processes may use while settings are timed before the run
# warns: two jobs on two cores slowed timings 4-10x and made them useless.
BUSY_SHARE = 0.1


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", dest="configs", nargs="+", required=True,
                        help="LazyConfig files of ViTDet models (baseline or AiluRus)")
    parser.add_argument("--sizes", "--size", dest="sizes", nargs="+", type=int, default=[1024],
                        help="canvases the photos are resized to (long edge) and padded to (square)")
    parser.add_argument("--own-aspect", action="store_true",
                        help="no square padding: a canvas of the photo's own aspect, as configs with "
                             "square_pad 0 run")
    parser.add_argument("--batches", "--batch", dest="batches", nargs="+", type=int, default=[1])
    parser.add_argument("--reducers", "--reducer", dest="reducers", nargs="+", default=["ailurus"],
                        choices=sorted(REDUCERS))
    parser.add_argument("--keep-ratios", "--keep-ratio", dest="keep_ratios", nargs="+", type=float, default=None,
                        help="default: the config's")
    parser.add_argument("--cluster-layers", "--cluster-layer", dest="cluster_layers", nargs="+", type=int,
                        default=None, help="default: the config's")
    parser.add_argument("--iters", type=int, default=3, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--image", default="coffee",
                        help=f"the first photo of a batch: one of {', '.join(SAMPLE_PHOTOS)}, or an image file")
    parser.add_argument("--no-e2e", action="store_true", help="time the backbone only")
    parser.add_argument("--train-step", action="store_true", help="also time a training step")
    parser.add_argument("--memory", action="store_true",
                        help="also measure peak memory, each setting in a process of its own")
    parser.add_argument("--compile", action="store_true", help="also time the backbone under torch.compile (inductor)")
    parser.add_argument("--onnxruntime", action="store_true", help="also time the backbone exported to onnxruntime")
    parser.add_argument("--no-detectron2", action="store_true", help="skip Detectron2's own ViT")
    parser.add_argument("--eval", action="store_true",
                        help="COCO box / mask AP on the config's test set (needs its train.init_checkpoint)")
    parser.add_argument("--json", default=None, help="write {'rows': [...]} here")
    parser.add_argument("--report", default=None, help="write benchmark.md and the plots into this folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random init when no checkpoint exists")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", default="fp32", choices=sorted(AMP_DTYPES),
                        help="autocast dtype of every timed run (fp32: none)")
    parser.add_argument("opts", nargs="*", help="config overrides key=value, anywhere on the line")
    argv = sys.argv[1:] if argv is None else list(argv)
    # key=value overrides may follow a list option (--sizes 512 1024 key=value): take them out first.
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])
    args.opts = overrides
    if args.onnxruntime and args.device != "cpu":
        parser.error("--onnxruntime times onnxruntime's CPU provider: use it with --device cpu")
    if args.compile and args.warmup < 1:
        parser.error("--compile needs --warmup >= 1: the first run of each setting compiles it")
    return args


def settings(net_cfg, args) -> List[Dict]:
    """Knobs of every measured setting: the baseline first, then reducer x keep ratio x cluster layer."""
    keeps = args.keep_ratios or [net_cfg.keep_ratio]
    layers = args.cluster_layers or [net_cfg.cluster_layer]
    return [dict(enabled=False)] + [
        dict(enabled=True, reducer=r, keep_ratio=k, cluster_layer=c) for r, k, c in product(args.reducers, keeps, layers)
    ]


def build_model(cfg, size: int, seed: int, device: str = "cpu", with_stock: bool = True, square: bool = True):
    """(AiluRus Mask R-CNN padding to a ``size`` square (without ``square``: to its coarsest stride),
    Detectron2's stock ViTDet with the same weights (None without ``with_stock``), weights used)."""
    ours = copy.deepcopy(cfg.model)
    ours.backbone.square_pad = size if square else 0
    stock = copy.deepcopy(ours)
    ours.backbone._target_, ours.backbone.net._target_ = AiluRusSimpleFeaturePyramid, AiluRusViT
    stock.backbone._target_, stock.backbone.net._target_ = SimpleFeaturePyramid, ViT
    for key in SETTING_NAMES:
        stock.backbone.net.pop(key, None)
    # Stock ViTDet checkpoints activations through fairscale, which is not installed; the stock model
    # is only timed in inference, where checkpointing does nothing.
    stock.backbone.net.use_act_checkpoint = False
    torch.manual_seed(seed)
    model = instantiate(ours).eval().to(device)
    stock_model = instantiate(stock).eval().to(device) if with_stock else None
    weights = load_config_weights([m for m in (model, stock_model) if m is not None], cfg)
    return model, stock_model, weights


def without_targets(inputs: List[Dict]) -> List[Dict]:
    """The inference inputs of ``batch_inputs``: the same dicts without their ``instances``."""
    return [{k: v for k, v in item.items() if k != "instances"} for item in inputs]


def batch_inputs(first: str, size: int, batch: int, input_format: str, num_classes: int) -> List[Dict]:
    """Model inputs for a batch of photos (``first``, then the others in turn), each with three
    rectangular ground-truth instances so a training step can run."""
    names = [first] + [p for p in SAMPLE_PHOTOS if p != first]
    inputs = []
    for i in range(batch):
        item = model_input(sample_photo(names[i % len(names)]), size, input_format)
        h, w = item["image"].shape[1:]
        boxes = torch.tensor([[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.3 * h, 0.9 * w, 0.9 * h],
                              [0.2 * w, 0.5 * h, 0.35 * w, 0.7 * h]])
        masks = torch.zeros(3, h, w, dtype=torch.bool)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.round().long().tolist()):
            m[y0:y1, x0:x1] = True
        item["instances"] = Instances((h, w), gt_boxes=Boxes(boxes), gt_classes=torch.arange(3) % num_classes,
                                      gt_masks=BitMasks(masks))
        inputs.append(item)
    return inputs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: str):
    """Autocast to the ``amp`` dtype on ``device`` (off for fp32)."""
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp], enabled=AMP_DTYPES[amp] is not None)


def _time_ms(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: List[Dict]) -> None:
    """One Detectron2 training step: losses, backward, optimizer step."""
    model.train()
    with EventStorage():  # Detectron2's heads log training statistics to it
        losses = model(inputs)
    sum(losses.values()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> Optional[float]:
    """Memory ``fn`` needs at its peak beyond what was allocated before it, in MiB.

    CUDA: the caching allocator's peak. CPU (Linux): growth of the peak resident set size, reset
    through /proc/self/clear_refs, after glibc returned its free heap memory (malloc_trim), so
    memory freed by earlier runs is not silently reused. None where neither is available.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _proc_status_kb("VmRSS")
        fn()
        return (_proc_status_kb("VmHWM") - before) / 1024
    except OSError:
        return None


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure(cfg, config: str, size: int, batch: int, args, progress: tqdm) -> List[Dict]:
    """Rows for every setting of one (config, size, batch), then Detectron2's own ViT's."""
    model, stock, weights = build_model(cfg, size, args.seed, args.device, with_stock=not args.no_detectron2,
                                        square=not args.own_aspect)
    device = next(model.parameters()).device
    knobs_of = dict(enumerate(settings(cfg.model.backbone.net, args)))
    views = {i: with_settings(model, **knobs) for i, knobs in knobs_of.items()}
    inputs = batch_inputs(args.image, size, batch, model.input_format, cfg.model.roi_heads.num_classes)
    with torch.no_grad():
        images = model.preprocess_image(without_targets(inputs)).tensor
    with tempfile.TemporaryDirectory() as scratch:
        tasks = timed_tasks(views, images, inputs, args, scratch)
        watch = CpuWatch()
        rounds = time_interleaved(views, stock, tasks, images, device, args, progress)
        others = watch.other_share()
    if others > BUSY_SHARE:
        logger.warning(f"other processes used {others:.0%} of the CPU time while the settings were timed: the "
                       "timings are slowed and noisy. Rerun with nothing else running.")

    rows, base_flops = [], None
    for i, view in views.items():
        row = {"model": _model_name(model.backbone.net), "config": config, "size": size,
               "canvas": list(images.shape[-2:]), "batch": batch,
               **setting_row(view, knobs_of[i]["enabled"], images, rounds, i, tasks, base_flops),
               "threads": torch.get_num_threads(), "device": _device_name(device), "amp": args.amp, "weights": weights,
               "iters": args.iters, "photo": args.image, "other_cpu_share": round(others, 3)}
        base_flops = base_flops or row["gflops"]
        if args.memory:
            row.update(isolated_peak_memory(config, size, batch, knobs_of[i], args))
        if args.eval:
            row.update(evaluate_setting(config, args.opts, knobs_of[i]))
        rows.append(row)
    if not args.no_detectron2:
        rows.append(detectron2_row(rows[0], stock, images, rounds, base_flops))
    return rows


def timed_tasks(views: Dict[int, torch.nn.Module], images: torch.Tensor, inputs: List[Dict], args,
                scratch: str) -> Dict[str, Callable[[int], Callable[[], object]]]:
    """What is timed, by task name: for setting ``i``, ``tasks[name](i)`` is the call to time.
    ONNX files are written to ``scratch``."""
    eval_inputs = without_targets(inputs)
    model = views[0]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    tasks: Dict[str, Callable[[int], Callable[[], object]]] = {"backbone": lambda i: (lambda: views[i].backbone(images))}
    if args.compile:
        compiled = {i: torch.compile(view.backbone) for i, view in views.items()}
        tasks["compiled"] = lambda i: (lambda: compiled[i](images))
    if args.onnxruntime:
        sessions = {i: onnxruntime_session(view.backbone, images, os.path.join(scratch, f"{i}.onnx"))
                    for i, view in views.items()}
        feed = {"images": images.cpu().numpy()}
        tasks["onnxruntime"] = lambda i: (lambda: sessions[i].run(None, feed))
    if not args.no_e2e:
        tasks["e2e"] = lambda i: (lambda: views[i](eval_inputs))
    if args.train_step:
        tasks["train"] = lambda i: (lambda: train_step(views[i], optimizer, inputs))
    return tasks


def onnxruntime_session(backbone: torch.nn.Module, images: torch.Tensor, path: str):
    """The backbone exported to ONNX at ``path``, loaded in onnxruntime with torch's thread count."""
    import onnxruntime

    export_backbone(backbone, images.cpu(), "onnx", path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def isolated_peak_memory(config: str, size: int, batch: int, knobs: Dict, args) -> Dict:
    """Peak memory of one setting, measured in a fresh process (``_peak_memory_job``)."""
    job = (config, args.opts, size, batch, knobs, args.train_step, args.seed, args.image, args.device, args.amp,
           not args.own_aspect)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_peak_memory_job, job)


def _peak_memory_job(config: str, opts: Sequence[str], size: int, batch: int, knobs: Dict, train: bool, seed: int,
                     image: str, device: str, amp: str, square: bool) -> Dict:
    """In this (fresh) process: peak memory of inference and of a training step with ``knobs``,
    each after one untimed warm-up run (one-time allocations, the optimizer's state, are left out)."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), list(opts))
    model = with_settings(build_model(cfg, size, seed, device, with_stock=False, square=square)[0], **knobs)
    device = next(model.parameters()).device
    inputs = batch_inputs(image, size, batch, model.input_format, cfg.model.roi_heads.num_classes)
    eval_inputs = without_targets(inputs)
    row = {}
    with torch.no_grad(), autocast(device, amp):
        model(eval_inputs)
        row["peak_mem_mb"] = peak_memory_mb(lambda: model(eval_inputs), device)
    if train:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
        with autocast(device, amp):
            train_step(model, optimizer, inputs)
            row["peak_train_mem_mb"] = peak_memory_mb(lambda: train_step(model, optimizer, inputs), device)
    return row


class CpuWatch:
    """The CPU time other processes use from its creation on: the machine's busy time minus this
    process's and its waited-for children's."""

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple:
        machine = psutil.cpu_times()
        own = psutil.Process().cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return time.monotonic(), busy, own.user + own.system + own.children_user + own.children_system

    def other_share(self) -> float:
        """Other processes' CPU time since creation, as a share of all cores' time (0 to 1)."""
        (t0, busy0, own0), (t1, busy1, own1) = self.start, self._snapshot()
        wall = max(t1 - t0, 1e-9) * (psutil.cpu_count() or 1)
        return min(max((busy1 - busy0) - (own1 - own0), 0.0) / wall, 1.0)


def time_interleaved(views: Dict[int, torch.nn.Module], stock: torch.nn.Module, tasks: Dict, images: torch.Tensor,
                     device: torch.device, args, progress: tqdm) -> Dict[tuple, List[float]]:
    """ms of every timed round of every (setting, task), of Detectron2's ViT ("detectron2", "backbone")
    and of each setting's reduction step alone (i, "reduce"): settings interleaved round by round,
    warm-up rounds excluded, so round r of every setting ran at about the same time."""
    net: AiluRusViT = next(iter(views.values())).backbone.net
    enabled = [i for i, v in views.items() if v.backbone.net.enabled]
    # The grid tokens each reduction step sees depend only on the cluster layer: computed once per layer.
    with torch.no_grad():
        at_layer = {layer: net.grid_tokens(images, layer) for layer in {views[i].backbone.net.cluster_layer
                                                                        for i in enabled}}
    grids = {i: at_layer[views[i].backbone.net.cluster_layer] for i in enabled}
    times: Dict[tuple, List[float]] = {}

    def record(key: tuple, step: int, ms: float) -> None:
        if step >= args.warmup:
            times.setdefault(key, []).append(ms)

    for step in range(args.warmup + args.iters):
        for task, make in tasks.items():
            with torch.enable_grad() if task == "train" else torch.no_grad(), autocast(device, args.amp):
                for i in views:
                    record((i, task), step, _time_ms(make(i), device))
                    progress.update()
                if task == "backbone" and not args.no_detectron2:
                    record(("detectron2", task), step, _time_ms(lambda: stock.backbone(images), device))
        with torch.no_grad():  # the reduction step alone, on the grid tokens it sees in the forward
            for i, (grid, is_pad) in grids.items():
                vnet = views[i].backbone.net
                record((i, "reduce"), step, _time_ms(
                    lambda: vnet.find_clusters(grid, is_pad, vnet.blocks[vnet.cluster_layer:]), device))
    return times


TASK_COLUMNS = {"backbone": "backbone", "compiled": "compiled_backbone", "onnxruntime": "onnxruntime_backbone",
                "e2e": "e2e", "train": "train_step"}


def speedup_range(rounds: Dict[tuple, List[float]], base: tuple, key: tuple) -> List[float]:
    """[lowest, highest] speed-up of ``key`` against ``base`` within one round: the machine's
    drift between rounds cancels in each, so the range shows how far one timed round can mislead."""
    ratios = [b / t for b, t in zip(rounds[base], rounds[key])]
    return [min(ratios), max(ratios)]


def timing_columns(rounds: Dict[tuple, List[float]], column: str, base: tuple, key: tuple) -> Dict:
    """``{column}_ms`` (median over the rounds), ``{column}_speedup`` (against ``base``'s median) and
    ``{column}_speedup_range`` of ``key``'s rounds."""
    ms = statistics.median(rounds[key])
    return {f"{column}_ms": ms, f"{column}_speedup": statistics.median(rounds[base]) / ms,
            f"{column}_speedup_range": speedup_range(rounds, base, key)}


def setting_row(view: torch.nn.Module, enabled: bool, images: torch.Tensor, rounds: Dict[tuple, List[float]], i: int,
                tasks: Dict, base_flops: Optional[float]) -> Dict:
    """Tokens, FLOPs (against ``base_flops``, the baseline's; None for the baseline itself) and the
    timings of setting ``i`` (``timing_columns`` of its ``rounds``, by (setting, task))."""
    vnet = view.backbone.net
    with torch.no_grad():
        _, state = view.backbone.forward_with_state(images)
    gflops = count_flops(view.backbone, (images,))[0] / 1e9
    row = {
        "reducer": vnet.reducer if enabled else "none",
        "keep_ratio": vnet.keep_ratio if enabled else 1.0,
        "cluster_layer": vnet.cluster_layer if enabled else None,
        "unfold": vnet.unfold_mode if enabled else None,
        "tokens_before": state.grid_hw[0] * state.grid_hw[1], "tokens_after": int(state.positions.shape[1]),
        "gflops": gflops, "flops_ratio": (base_flops or gflops) / gflops,
        "reduce_ms": statistics.median(rounds[i, "reduce"]) if (i, "reduce") in rounds else None,
    }
    for task in tasks:  # each task's time and its speed-up against the baseline run the same way
        column = TASK_COLUMNS[task]
        row.update(timing_columns(rounds, column, (0, task), (i, task)))
    if "e2e" in tasks:
        row["throughput"] = images.shape[0] * 1e3 / row["e2e_ms"]
    return row


def detectron2_row(baseline: Dict, stock: torch.nn.Module, images: torch.Tensor, rounds: Dict[tuple, List[float]],
                   base_flops: float) -> Dict:
    """Detectron2's own ViT: the baseline's row with its backbone FLOPs and time (it is timed on the
    backbone only)."""
    row = {**baseline, "reducer": "detectron2", "gflops": count_flops(stock.backbone, (images,))[0] / 1e9,
           **timing_columns(rounds, "backbone", (0, "backbone"), ("detectron2", "backbone"))}
    row["flops_ratio"] = base_flops / row["gflops"]
    for key in [f"{c}_{unit}" for c in TASK_COLUMNS.values() if c != "backbone"
                for unit in ("ms", "speedup", "speedup_range")] + [
            "throughput", "peak_mem_mb", "peak_train_mem_mb", "box_ap", "mask_ap"]:
        row.pop(key, None)
    return row


def evaluate_setting(config: str, opts: Sequence[str], knobs: Dict) -> Dict:
    """Box / mask AP of the config's checkpoint on its test set with the setting's knobs."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), list(opts))
    knob_opts = [f"model.backbone.net.{k}={v}" for k, v in knobs.items()]
    with tempfile.TemporaryDirectory() as out:
        result = evaluate(config, cfg.train.init_checkpoint, list(opts) + knob_opts, out)
    return {"box_ap": result["box_ap"], "mask_ap": result["mask_ap"]}


def _model_name(net: AiluRusViT) -> str:
    names = {384: "ViT-S", 768: "ViT-B", 1024: "ViT-L", 1280: "ViT-H"}
    width = net.blocks[0].norm1.normalized_shape[0]
    return names.get(width, f"ViT-{width}")


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def run(args) -> List[Dict]:
    groups = list(product(args.configs, args.sizes, args.batches))
    cfgs = {c: LazyConfig.apply_overrides(LazyConfig.load(c), args.opts) for c in args.configs}
    per_round = len(settings(next(iter(cfgs.values())).model.backbone.net, args)) * (
        1 + (not args.no_e2e) + args.train_step + args.compile + args.onnxruntime)
    rows = []
    with tqdm(total=len(groups) * per_round * (args.warmup + args.iters), desc="benchmark (interleaved)",
              unit="run") as progress:
        for config, size, batch in groups:
            progress.set_postfix_str(f"{config.split('/')[-1]} {size}px batch {batch}")
            rows += measure(cfgs[config], config, size, batch, args, progress)
    return rows


def table(rows: List[Dict]) -> str:
    from tabulate import tabulate

    columns = ["model", "size", "batch", "reducer", "keep_ratio", "cluster_layer", "tokens_after", "gflops",
               "flops_ratio", "backbone_ms", "backbone_speedup", "backbone_speedup_range", "compiled_backbone_ms",
               "compiled_backbone_speedup", "onnxruntime_backbone_ms", "onnxruntime_backbone_speedup", "e2e_ms",
               "e2e_speedup", "train_step_ms", "train_step_speedup", "peak_mem_mb", "peak_train_mem_mb", "box_ap",
               "mask_ap"]
    columns = [c for c in columns if any(c in r for r in rows)]

    def cell(value):  # a speed-up range as "low-high"
        return "-".join(f"{v:.2f}" for v in value) if isinstance(value, list) else value

    return tabulate([[cell(r.get(c)) for c in columns] for r in rows], headers=columns, floatfmt=".2f")


def main(argv=None) -> List[Dict]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    rows = run(args)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    if args.report:
        for path in write_report(rows, args.report):
            print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
