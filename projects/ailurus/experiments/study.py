"""The accuracy study: AP kept by AiluRus on pretrained ViT-S features, without and with fine-tuning.

    python -m ailurus.experiments.study --datasets demo nuclei --seeds 0 1 2 [key=value ...]

Per dataset and seed, in stages that are each cached under ``--work-dir`` (a rerun skips what is
done; an interrupted training resumes from its last checkpoint):

1. train the baseline (AiluRus off) with ``train_net.py``;
2. evaluate those weights with AiluRus off and at every (keep ratio, cluster layer, unfold):
   COCO box / mask AP, tokens kept, and the share of clusters on image tokens;
3. time each (keep ratio, cluster layer) against the baseline at the dataset's canvas size
   (``ailurus.experiments.benchmark``: same process, interleaved, warm-up excluded; once per dataset
   and AiluRus settings: like the evaluations, a cached timing records the settings it ran under);
4. train with AiluRus on (``--finetune-keeps``, the config's cluster layer) from the same
   weights and schedule, evaluate it, and compare training time per iteration (the logged time
   and, side by side, the benchmark's interleaved training step). Datasets in ``INIT_FROM`` start
   every training from another dataset's baseline of the same seed: fine-tuning at a larger canvas.

Writes ``reports/accuracy.json`` (``rows``: one per evaluated model; rows of datasets a run does not
study are kept from the existing file), ``reports/accuracy.md``
(mean and standard deviation over seeds of every AP change) and ``reports/accuracy.png``.
"""
import argparse
import glob
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from detectron2.config import LazyConfig
from tqdm import tqdm

from ailurus.reducers import REDUCERS

from . import benchmark
from .budget_study import run_budget
from .runner import REPO, cached, evaluate, resolved_settings, train

STUDY_CONFIGS = {
    "demo": os.path.join(REPO, "configs", "study", "vitdet_s_demo.py"),  # the demo on a longer schedule
    "demo_large": os.path.join(REPO, "configs", "study", "vitdet_s_demo_large.py"),
    "demo_large_1024": os.path.join(REPO, "configs", "study", "vitdet_s_demo_large_1024.py"),
    "nuclei": os.path.join(REPO, "configs", "study", "vitdet_s_nuclei.py"),
    "nuclei_full": os.path.join(REPO, "configs", "study", "vitdet_s_nuclei_full.py"),  # whole backbone trained
    "nuclei_full_1024": os.path.join(REPO, "configs", "study", "vitdet_s_nuclei_full_1024.py"),
    "nuclei_1024_filled": os.path.join(REPO, "configs", "study", "vitdet_s_nuclei_1024_filled.py"),
    "nuclei_512": os.path.join(REPO, "configs", "study", "vitdet_s_nuclei_512.py"),  # fine-tuned at 512 px
    "nuclei_512_at1024": os.path.join(REPO, "configs", "study", "vitdet_s_nuclei_1024_filled.py"),
    "nuclei_full_512": os.path.join(REPO, "configs", "study", "vitdet_s_nuclei_full_512.py"),
    "nuclei_full_512_at1024": os.path.join(REPO, "configs", "study", "vitdet_s_nuclei_1024_filled.py"),
    "spacenet": os.path.join(REPO, "configs", "study", "vitdet_s_spacenet.py"),
    "spacenet_1024": os.path.join(REPO, "configs", "study", "vitdet_s_spacenet_1024.py"),
}
# Datasets evaluated with another dataset's trained weights (the same model at a larger canvas).
WEIGHTS_FROM = {"demo_large_1024": "demo_large", "nuclei_full_1024": "nuclei_full", "nuclei_1024_filled": "nuclei",
                "nuclei_512_at1024": "nuclei_512", "nuclei_full_512_at1024": "nuclei_full_512", "spacenet_1024": "spacenet"}
# Datasets whose training (baseline and AiluRus fine-tunes alike) starts from the same seed's
# baseline weights of another dataset: fine-tuning a trained detector at a larger canvas (the
# 1024 px photo set's heads from the 256 px demo's: from scratch they learned far too slowly).
INIT_FROM = {"nuclei_512": "nuclei", "nuclei_full_512": "nuclei", "demo_large": "demo"}
# What a study row keeps of an evaluation (``runner.evaluate``).
EVAL_KEYS = ("box_ap", "mask_ap", "tokens_after", "image_keep_ratio", "padding_share", "canvas")


def train_seed(config: str, output_dir: str, seed: int, opts: Sequence[str]) -> str:
    """Quiet ``runner.train`` of one seed."""
    return train(config, output_dir, [f"train.seed={seed}", *opts], quiet=True)


def evaluate_row(config: str, weights: str, opts: Sequence[str], output_dir: str) -> Dict:
    """``runner.evaluate``'s AP and tokens kept (``EVAL_KEYS``)."""
    result = evaluate(config, weights, opts, output_dir)
    return {k: result[k] for k in EVAL_KEYS}


def seconds_per_iteration(output_dir: str) -> Optional[float]:
    """Median training time per iteration that Detectron2 logged in ``metrics.json`` (None for runs
    too short for its timer, which skips the first iterations)."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        times = [row["time"] for row in map(json.loads, f) if "time" in row]
    return statistics.median(times) if times else None


def speed(config: str, weights: str, reducer: str, keep: float, layer: int, iters: int, opts: Sequence[str],
          train_step: bool = False) -> Dict:
    """Speed-ups on the config's canvas: square (``square_pad``) on the benchmark's photo, or, for
    configs without square padding, the first val image at the test augmentation's size on a
    canvas of its own aspect. With ``train_step``: the training step's instead, at the config's
    training batch."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), list(opts))
    size, photo = cfg.model.backbone.square_pad, []
    if not size:
        from detectron2.data import DatasetCatalog

        size = cfg.dataloader.test.mapper.augmentations[-1].max_size
        photo = ["--image", DatasetCatalog.get(cfg.dataloader.test.dataset.names)[0]["file_name"], "--own-aspect"]
    task = ["--train-step", "--no-e2e", "--batch", str(cfg.dataloader.train.total_batch_size)] if train_step else []
    rows = benchmark.run(benchmark.parse_args([
        "--config-file", config, "--size", str(size), *photo, "--reducer", reducer,
        "--keep-ratio", str(keep), "--cluster-layer", str(layer), "--iters", str(iters), "--no-detectron2", *task,
        *opts, f"train.init_checkpoint={weights}"]))
    row = rows[1]  # rows[0] is the baseline
    if train_step:
        return {"train_step_speedup": row["train_step_speedup"], "train_step_ms": row["train_step_ms"],
                "baseline_train_step_ms": rows[0]["train_step_ms"], "train_other_cpu_share": row["other_cpu_share"]}
    return {"backbone_speedup": row["backbone_speedup"], "e2e_speedup": row["e2e_speedup"],
            "flops_ratio": row["flops_ratio"], "cluster_share": row["reduce_ms"] / row["backbone_ms"],
            "other_cpu_share": row["other_cpu_share"]}


def setting_opts(reducer: str, keep: float, layer: int, unfold: str) -> List[str]:
    return ["model.backbone.net.enabled=True", f"model.backbone.net.reducer={reducer}",
            f"model.backbone.net.keep_ratio={keep}", f"model.backbone.net.cluster_layer={layer}",
            f"model.backbone.net.unfold={unfold}"]


def setting_key(reducer: str, keep: float, layer: int, unfold: Optional[str] = None) -> str:
    """Cache name of a setting (AiluRus settings keep their original, reducer-less names)."""
    key = f"keep{keep}_L{layer}" + (f"_{unfold}" if unfold else "")
    return key if reducer == "ailurus" else f"{reducer}_{key}"


def unfolds_of(reducer: str, unfolds: Sequence[str]) -> List[str]:
    """AiluRus is evaluated with every unfold asked for; a peer with its own unfold only."""
    return list(unfolds) if reducer == "ailurus" else [REDUCERS[reducer].unfold]


def study_settings(args, config_layer: int) -> List[tuple]:
    """(reducer, keep, layer, unfold, variant, overrides) of every setting evaluated without
    fine-tuning: AiluRus at every layer and unfold, each peer at ``--peer-layers`` with its own
    unfold, each variant (a named set of overrides) at ``--variant-layers`` (default: the config's)."""
    def knob(overrides: Sequence[str], name: str, default: str) -> str:
        return next((o.split("=", 1)[1] for o in overrides if o.startswith(f"model.backbone.net.{name}=")), default)

    peer_layers = args.peer_layers or [config_layer]
    variant_layers = args.variant_layers or [config_layer]
    return [(r, k, layer, u, "", []) for r in args.reducers for k in args.keeps
            for layer in (args.layers if r == "ailurus" else peer_layers) for u in unfolds_of(r, args.unfolds)] + [
        (knob(overrides, "reducer", "ailurus"), k, layer, knob(overrides, "unfold", args.unfolds[0]), name,
         overrides) for name, overrides in args.variants for k in args.keeps for layer in variant_layers]


@dataclass(frozen=True)
class DatasetRun:
    """Where one dataset's study reads and writes, and the overrides every stage of it shares.

    config: the dataset's study config; train_config / train_work: those of the dataset whose
    weights it evaluates (``WEIGHTS_FROM``; itself otherwise); work: its cache folder; opts: the
    command line's overrides; off_opts: the same with AiluRus off; config_layer: the config's
    cluster layer; settings: ``study_settings``; init_from: the dataset whose baseline weights its
    training starts from (``INIT_FROM``; None: the config's ``train.init_checkpoint``); work_dir:
    the study's cache root.
    """

    dataset: str
    config: str
    train_config: str
    work: str
    train_work: str
    opts: List[str]
    off_opts: List[str]
    config_layer: int
    settings: List[tuple]
    init_from: Optional[str]
    work_dir: str

    @classmethod
    def plan(cls, args, dataset: str) -> "DatasetRun":
        trained_on = WEIGHTS_FROM.get(dataset, dataset)
        config, opts = STUDY_CONFIGS[dataset], list(args.opts)
        config_layer = LazyConfig.apply_overrides(LazyConfig.load(config), opts).model.backbone.net.cluster_layer
        return cls(dataset=dataset, config=config, train_config=STUDY_CONFIGS[trained_on],
                   work=os.path.join(args.work_dir, dataset), train_work=os.path.join(args.work_dir, trained_on),
                   opts=opts, off_opts=opts + ["model.backbone.net.enabled=False"], config_layer=config_layer,
                   settings=study_settings(args, config_layer), init_from=INIT_FROM.get(trained_on),
                   work_dir=args.work_dir)

    def run_dir(self, seed: int, name: str) -> str:
        """Output folder of training run ``name`` of ``seed``."""
        return os.path.join(self.train_work, f"seed{seed}", name)

    def train(self, name: str, seed: int, opts: Sequence[str]) -> str:
        """Weights of training run ``name`` of ``seed`` (cached), started from ``init_from``'s
        baseline of the same seed where there is one (trained first if missing)."""
        if self.init_from:
            start = train_seed(STUDY_CONFIGS[self.init_from], os.path.join(self.work_dir, self.init_from, f"seed{seed}",
                                                                           "baseline"), seed, self.off_opts)
            opts = [*opts, f"train.init_checkpoint={start}"]
        return train_seed(self.train_config, self.run_dir(seed, name), seed, opts)

    def timing(self, args, weights: str, reducer: str, keep: float, layer: int, variant: str = "",
               overrides: Sequence[str] = (), unfold: Optional[str] = None) -> Dict:
        """Speed depends on the setting, not on the seed or the weights (fine-tuned or not), nor on
        the hard unfolds: measured once per dataset, with the first weights that need it, and again
        when the other AiluRus settings change (the cache records them). The soft residual unfold,
        whose similarity search costs time, is timed on its own."""
        soft = ["model.backbone.net.unfold=soft_residual"] if unfold == "soft_residual" else []
        speed_key = (f"{variant}_keep{keep}_L{layer}" if variant else
                     setting_key(reducer, keep, layer, unfold if soft else None))
        opts = self.opts + list(overrides) + soft
        return cached(os.path.join(self.work, "speed", f"{speed_key}.json"),
                      lambda: speed(self.config, weights, reducer, keep, layer, args.speed_iters, opts),
                      resolved_settings(self.config, opts))

    def train_timing(self, args, weights: str, keep: float) -> Dict:
        """Training-step speed-up of an AiluRus fine-tune at keep ``keep`` on the training config's
        canvas and batch, against AiluRus off, side by side (once per setting)."""
        return cached(os.path.join(self.train_work, "speed", f"train_keep{keep}_L{self.config_layer}.json"),
                      lambda: speed(self.train_config, weights, "ailurus", keep, self.config_layer, args.speed_iters,
                                    self.opts, train_step=True),
                      resolved_settings(self.train_config, self.opts))


def run_dataset(args, dataset: str) -> List[Dict]:
    """Every row of one dataset: per seed, the baseline, the sweep without fine-tuning, the adaptive
    budget and the AiluRus fine-tune."""
    run = DatasetRun.plan(args, dataset)
    rows = []
    for seed in args.seeds:
        weights, baseline = baseline_row(run, seed)
        rows += [baseline, *sweep_rows(run, args, seed, weights)]
        if args.adaptive_keeps:
            rows += [{**baseline_common(run, seed), **r, "budget": "adaptive"} for r in run_budget(
                run.config, weights, run.opts, args.adaptive_keeps, evaluate_row,
                os.path.join(run.work, f"seed{seed}"), run.work)]
        if args.finetune_seeds is None or seed in args.finetune_seeds:
            rows += [r for keep in args.finetune_keeps for r in finetune_rows(run, args, seed, keep)]
    return rows


def baseline_common(run: DatasetRun, seed: int) -> Dict:
    return dict(dataset=run.dataset, seed=seed, budget="fixed")


def baseline_row(run: DatasetRun, seed: int):
    """(weights, row) of the baseline: trained with AiluRus off, evaluated with it off."""
    seed_dir = os.path.join(run.work, f"seed{seed}")
    weights = run.train("baseline", seed, run.off_opts)
    off = cached(os.path.join(seed_dir, "eval", "off.json"),
                 lambda: evaluate_row(run.config, weights, run.off_opts, os.path.join(seed_dir, "eval", "off")),
                 resolved_settings(run.config, run.off_opts))
    return weights, {**baseline_common(run, seed), "reducer": "none", "keep_ratio": 1.0, "cluster_layer": None,
                     "unfold": None, "fine_tuned": False, "backbone_speedup": 1.0, "e2e_speedup": 1.0, **off}


def sweep_rows(run: DatasetRun, args, seed: int, weights: str) -> List[Dict]:
    """The baseline's weights evaluated at every setting of the sweep (no fine-tuning)."""
    seed_dir = os.path.join(run.work, f"seed{seed}")
    rows = []
    for reducer, keep, layer, unfold, variant, overrides in tqdm(run.settings, desc=f"{run.dataset} seed {seed}: "
                                                                 "settings", unit="eval"):
        key = f"{variant}_keep{keep}_L{layer}" if variant else setting_key(reducer, keep, layer, unfold)
        opts = run.opts + setting_opts(reducer, keep, layer, unfold) + list(overrides)
        ev = cached(os.path.join(seed_dir, "eval", f"{key}.json"),
                    lambda: evaluate_row(run.config, weights, opts, os.path.join(seed_dir, "eval", key)),
                    resolved_settings(run.config, opts))
        rows.append({**baseline_common(run, seed), "reducer": reducer, **({"variant": variant} if variant else {}),
                     "keep_ratio": keep, "cluster_layer": layer, "unfold": unfold, "fine_tuned": False, **ev,
                     **run.timing(args, weights, reducer, keep, layer, variant, overrides, unfold)})
    return rows


def finetune_rows(run: DatasetRun, args, seed: int, keep: float) -> List[Dict]:
    """The AiluRus-on fine-tune at ``keep`` (the config's layer), evaluated with AiluRus on and, to
    separate what training with it did to the weights from what clustering costs at inference, off."""
    seed_dir = os.path.join(run.work, f"seed{seed}")
    tuned_name = f"finetuned_keep{keep}"
    tune_opts = setting_opts("ailurus", keep, run.config_layer, args.unfolds[0])
    tuned = run.train(tuned_name, seed, run.opts + tune_opts)
    eval_dir = os.path.join(seed_dir, tuned_name)
    ev = cached(os.path.join(eval_dir, "eval.json"),
                lambda: evaluate_row(run.config, tuned, run.opts + tune_opts, os.path.join(eval_dir, "eval")),
                resolved_settings(run.config, run.opts + tune_opts))
    ev_off = cached(os.path.join(eval_dir, "eval_off.json"),
                    lambda: evaluate_row(run.config, tuned, run.off_opts, os.path.join(eval_dir, "eval_off")),
                    resolved_settings(run.config, run.off_opts))
    tuned_s, base_s = (seconds_per_iteration(run.run_dir(seed, name)) for name in (tuned_name, "baseline"))
    step = run.train_timing(args, tuned, keep)
    tuned_common = {**baseline_common(run, seed), "fine_tuned": True, "trained_keep_ratio": keep,
                    "train_time_ratio": tuned_s / base_s if tuned_s and base_s else None,
                    "train_step_speedup": step["train_step_speedup"],
                    "train_other_cpu_share": step.get("train_other_cpu_share")}  # absent from older caches
    return [{**tuned_common, "reducer": "ailurus", "keep_ratio": keep, "cluster_layer": run.config_layer,
             "unfold": args.unfolds[0], **ev, **run.timing(args, tuned, "ailurus", keep, run.config_layer)},
            {**tuned_common, "reducer": "none", "keep_ratio": 1.0, "cluster_layer": None, "unfold": None,
             "backbone_speedup": 1.0, "e2e_speedup": 1.0, **ev_off}]


def method_label(r: Dict) -> str:
    """The reducer, and what sets the row apart from its plain form (budget, variant)."""
    extra = [f"{r['budget']} budget"] if r.get("budget", "fixed") != "fixed" else []
    extra += [r["variant"]] if r.get("variant") else []
    extra += [f"trained at keep {r['trained_keep_ratio']}"] if r["reducer"] == "none" and r.get("fine_tuned") else []
    return r["reducer"] + (f" ({', '.join(extra)})" if extra else "")


ROW_KEY = ("dataset", "seed", "budget", "reducer", "variant", "keep_ratio", "cluster_layer", "unfold", "fine_tuned",
           "trained_keep_ratio")


def row_key(r: Dict) -> tuple:
    """What a report row measured (dataset, seed and setting), without what it found."""
    return tuple(r.get(k) for k in ROW_KEY)


def is_baseline(r: Dict) -> bool:
    """The reference row: the baseline fine-tune evaluated with AiluRus off."""
    return r["reducer"] == "none" and not r.get("fine_tuned")


def spread(values: List[float]) -> str:
    """Mean +- standard deviation of AP changes; a single seed has no spread, and says so."""
    if len(values) == 1:
        return f"{values[0]:+.2f} (one seed)"
    return f"{statistics.mean(values):+.2f} +- {statistics.stdev(values):.2f}"


def markdown(rows: List[Dict]) -> str:
    """AP change against the same seed's baseline: mean +- sd over seeds, per setting."""
    base = {(r["dataset"], r["seed"]): r for r in rows if is_baseline(r)}
    groups: Dict[tuple, List[Dict]] = {}
    for r in rows:
        if not is_baseline(r):
            groups.setdefault((r["dataset"], r["fine_tuned"], method_label(r), r["keep_ratio"], r["cluster_layer"],
                               r["unfold"]), []).append(r)

    lines = ["| dataset | canvas | padding | fine-tuned | reducer | keep | layer | unfold | image keep | box AP change | "
             "mask AP change | FLOPs ratio | backbone speed-up | end-to-end speed-up | training-step speed-up | seeds |",
             "|" + "---|" * 16]
    for (dataset, tuned, reducer, keep, layer, unfold), rs in sorted(groups.items(), key=str):
        box = [r["box_ap"] - base[dataset, r["seed"]]["box_ap"] for r in rs]
        mask = [r["mask_ap"] - base[dataset, r["seed"]]["mask_ap"] for r in rs]
        speedup = rs[0].get("backbone_speedup")
        e2e = rs[0].get("e2e_speedup")
        step = rs[0].get("train_step_speedup") if rs[0]["reducer"] != "none" else None  # the tuned model's
        marks = contended(rs[0].get("other_cpu_share")), contended(rs[0].get("train_other_cpu_share"))
        flops = rs[0].get("flops_ratio")
        canvas = "x".join(map(str, rs[0]["canvas"])) if rs[0].get("canvas") else ""
        padding = f"{rs[0]['padding_share']:.2f}" if rs[0].get("padding_share") is not None else ""
        lines.append(f"| {dataset} | {canvas} | {padding} | {tuned} | {reducer} | {keep} | {layer} | {unfold} | "
                     f"{statistics.mean(r['image_keep_ratio'] for r in rs):.2f} | {spread(box)} | {spread(mask)} | "
                     f"{'' if flops is None else f'{flops:.2f}x'} | "
                     f"{'' if speedup is None else f'{speedup:.2f}x{marks[0]}'} | "
                     f"{'' if e2e is None else f'{e2e:.2f}x{marks[0]}'} | "
                     f"{'' if step is None else f'{step:.2f}x{marks[1]}'} | {len(rs)} |")
    return "\n".join(lines) + "\n"


def contended(other_cpu_share: Optional[float]) -> str:
    """A mark for speed-ups timed while other processes used more than ``benchmark.BUSY_SHARE`` of
    the CPU (rows timed before the share was recorded carry none)."""
    return " (contended)" if other_cpu_share is not None and other_cpu_share > benchmark.BUSY_SHARE else ""


def plot(rows: List[Dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = {(r["dataset"], r["seed"]): r["mask_ap"] for r in rows if is_baseline(r)}
    datasets = sorted({r["dataset"] for r in rows if method_label(r) == "ailurus"})
    cols = min(3, len(datasets))  # a grid of at most 3 panels a row, each with its legend beside it
    nrows = math.ceil(len(datasets) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(8.5 * cols, 4.5 * nrows), squeeze=False)
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    for ax, dataset in zip(axes.flat, datasets):
        points = [r for r in rows if r["dataset"] == dataset and method_label(r) == "ailurus" and not r["fine_tuned"]]
        points = [r for r in points if r["unfold"] == points[0]["unfold"]]  # one unfold mode: the first asked for
        others = [r for r in rows if r["dataset"] == dataset and r["reducer"] != "none" and not r["fine_tuned"]
                  and method_label(r) != "ailurus"]

        def label(r: Dict) -> str:
            if method_label(r) == "ailurus":
                return f"cluster_layer {r['cluster_layer']}"
            # a variant run with another unfold than the plain rows' says so
            unfold = f", {r['unfold']} unfold" if r["reducer"] == "ailurus" and r["unfold"] != points[0]["unfold"] else ""
            return f"{method_label(r)} (layer {r['cluster_layer']}{unfold})"

        lines: Dict[str, tuple] = {}  # label -> (line style, rows)
        for style, rs in (("o-", points), ("s--", others)):
            for r in rs:
                lines.setdefault(label(r), (style, []))[1].append(r)
        for name, (style, same) in sorted(lines.items()):
            by_keep: Dict[float, List[Dict]] = {}
            for r in same:
                by_keep.setdefault(r["keep_ratio"], []).append(r)
            keeps = sorted(by_keep)
            xs = [by_keep[k][0]["backbone_speedup"] for k in keeps]
            ys = [statistics.mean(r["mask_ap"] - base[dataset, r["seed"]] for r in by_keep[k]) for k in keeps]
            ax.plot(xs, ys, style, label=name)
        ax.axhline(0, color="grey", lw=0.8)
        low, high = ax.get_ylim()  # at least a few AP points tall: tiny changes should look tiny
        ax.set_ylim(min(low, -3.0), max(high, 1.0))
        ax.set(title=f"{dataset} ({points[0]['unfold']} unfold, mean over seeds)", xlabel="backbone speed-up (x)",
               ylabel="mask AP change vs AiluRus off")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, never over the points
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_curves(work_dir: str, dataset: str, path: str) -> bool:
    """Training loss and val mask AP over iterations of every training run of ``dataset`` that
    evaluated while training (``train.eval_period``): a colour per seed, a line style per run
    (baseline, each AiluRus fine-tune). False: no such run."""
    runs = []  # ((seed, run name), metrics records)
    for seed_dir in sorted(glob.glob(os.path.join(work_dir, dataset, "seed*"))):
        for metrics in sorted(glob.glob(os.path.join(seed_dir, "*", "metrics.json"))):
            with open(metrics) as f:
                records = [json.loads(line) for line in f]
            if any("segm/AP" in r for r in records):
                runs.append(((os.path.basename(seed_dir), os.path.basename(os.path.dirname(metrics))), records))
    if not runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({seed for (seed, _), _ in runs})
    tunes = sorted({tune for (_, tune), _ in runs} - {"baseline"})
    fig, (loss_ax, ap_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (seed, tune), records in runs:
        style = dict(color=f"C{seeds.index(seed)}",
                     ls="-" if tune == "baseline" else ("--", ":", "-.")[tunes.index(tune) % 3], label=f"{seed} {tune}")
        loss_ax.plot(*zip(*[(r["iteration"], r["total_loss"]) for r in records if "total_loss" in r]), **style)
        ap_ax.plot(*zip(*[(r["iteration"], r["segm/AP"]) for r in records if "segm/AP" in r]), marker="o", **style)
    loss_ax.set(xlabel="iteration", ylabel="total training loss",
                title=f"{dataset}: training loss (solid: AiluRus off; dashed, dotted: on)")
    ap_ax.set(xlabel="iteration", ylabel="val mask AP", title=f"{dataset}: val mask AP while training")
    ap_ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def plot_budget(rows: List[Dict], path: str) -> bool:
    """Tokens kept per val image against its edge density, per adaptive setting (False: none)."""
    adaptive = [r for r in rows if r.get("budget") == "adaptive" and "tokens_per_image" in r]
    if not adaptive:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in adaptive})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for i, keep in enumerate(sorted({r["keep_ratio"] for r in adaptive if r["dataset"] == dataset}, reverse=True)):
            rs = [r for r in adaptive if r["dataset"] == dataset and r["keep_ratio"] == keep]
            ax.scatter([e for r in rs for e in r["edge_density"]], [t for r in rs for t in r["tokens_per_image"]],
                       color=f"C{i}", s=14, alpha=0.7, label=f"mean tokens of keep {keep} ({rs[0]['fixed_tokens']})")
            ax.axhline(rs[0]["fixed_tokens"], color=f"C{i}", lw=0.8, ls=":")
        ax.set(title=f"{dataset}: adaptive budget (dotted: fixed budget)", xlabel="edge density of the image",
               ylabel="tokens kept")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def _variant(spec: str):
    """'name:key=value,key=value' -> (name, ['key=value', ...])."""
    name, _, overrides = spec.partition(":")
    if not name or not overrides or any("=" not in o for o in overrides.split(",")):
        raise argparse.ArgumentTypeError(f"{spec!r} is not NAME:KEY=VALUE[,KEY=VALUE]")
    return name, overrides.split(",")


def main(argv=None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["demo", "nuclei"], choices=sorted(STUDY_CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--reducers", nargs="+", default=["ailurus"], choices=sorted(REDUCERS),
                        help="reducers evaluated without fine-tuning (the fine-tune is AiluRus)")
    parser.add_argument("--keeps", nargs="+", type=float, default=[0.7, 0.5, 0.35, 0.25, 0.15])
    parser.add_argument("--layers", nargs="+", type=int, default=[2, 3, 4, 6, 8])
    parser.add_argument("--peer-layers", nargs="+", type=int, default=None,
                        help="cluster layers of the peer reducers (default: the config's)")
    parser.add_argument("--unfolds", nargs="+", default=["residual", "copy"], choices=["residual", "copy", "soft_residual"])
    parser.add_argument("--variants", nargs="+", default=[], type=_variant, metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="method changes evaluated at every keep ratio and --variant-layers, "
                             "e.g. confined:model.backbone.net.confine_windows=True")
    parser.add_argument("--variant-layers", nargs="+", type=int, default=None,
                        help="cluster layers of the variants (default: the config's)")
    parser.add_argument("--adaptive-keeps", nargs="+", type=float, default=[],
                        help="evaluate budget='adaptive' at the mean token count of these fixed keep ratios")
    parser.add_argument("--finetune-keeps", nargs="*", type=float, default=[0.35],
                        help="keep ratios of the AiluRus fine-tunes (none: no fine-tune)")
    parser.add_argument("--finetune-seeds", nargs="+", type=int, default=None,
                        help="seeds that get the AiluRus fine-tune (default: all of --seeds)")
    parser.add_argument("--speed-iters", type=int, default=3)
    parser.add_argument("--work-dir", default=os.path.join("output", "study"))
    parser.add_argument("--reports", default="reports")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the report rows this run produces and keep the studied datasets' "
                             "other rows (default: a studied dataset's rows are this run's)")
    parser.add_argument("opts", nargs="*", help="config overrides key=value for every stage, anywhere on the line")
    argv = sys.argv[1:] if argv is None else list(argv)
    # key=value overrides may follow a list option (--seeds 0 1 2 train.max_iter=300): take them out first.
    overrides = [a for a in argv if "=" in a and not a.startswith("-") and ":" not in a.split("=", 1)[0]]
    args = parser.parse_args([a for a in argv if a not in overrides])
    args.opts = overrides
    run_rows = [row for dataset in args.datasets for row in run_dataset(args, dataset)]
    rows = run_rows
    os.makedirs(args.reports, exist_ok=True)
    report = os.path.join(args.reports, "accuracy.json")
    if os.path.isfile(report):  # keep the rows of datasets this run did not study (with --merge: of settings)
        produced = {row_key(r) for r in run_rows}
        with open(report) as f:
            rows = [r for r in json.load(f)["rows"]
                    if (row_key(r) not in produced if args.merge else r["dataset"] not in args.datasets)] + rows
    with open(os.path.join(args.reports, "accuracy.json"), "w") as f:
        json.dump({"rows": rows}, f, indent=1)
    with open(os.path.join(args.reports, "accuracy.md"), "w") as f:
        f.write(markdown(rows))
    plot(rows, os.path.join(args.reports, "accuracy.png"))
    plot_budget(rows, os.path.join(args.reports, "budget_tokens.png"))
    for dataset in args.datasets:  # a file per dataset: a run never overwrites another dataset's curves
        plot_curves(args.work_dir, dataset, os.path.join(args.reports, f"finetune_curves_{dataset}.png"))
    print(markdown(rows))
    return run_rows


if __name__ == "__main__":
    main()
