"""The benchmark's markdown table and plots, from its rows (``ailurus.experiments.benchmark``)."""
import os
from typing import Dict, List

REDUCER_STYLE = {"ailurus": "C3", "tome": "C0", "tome_window": "C9", "expedite": "C2", "pool": "C7",
                 "none": "k", "detectron2": "C5"}


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _timed(row: Dict, column: str) -> str:
    """"ms (speed-up x)" of a timed column, or nothing where it was not measured."""
    if row.get(f"{column}_ms") is None:
        return ""
    return f"{row[f'{column}_ms']:.0f} ({row[f'{column}_speedup']:.2f}x)"


def markdown(rows: List[Dict]) -> str:
    header = ("| model | size | batch | reducer | keep | layer | tokens | GFLOPs | FLOPs ratio | backbone ms | "
              "backbone speed-up | compiled backbone ms | onnxruntime backbone ms | end-to-end ms | "
              "end-to-end speed-up | train-step ms | train-step speed-up | "
              "peak MB (inference / training) | box AP | mask AP |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        memory = " / ".join(_fmt(r.get(k), ".0f") for k in ("peak_mem_mb", "peak_train_mem_mb") if r.get(k) is not None)
        lines.append(
            f"| {r['model']} | {r['size']} | {r['batch']} | {r['reducer']} | {r['keep_ratio']} | "
            f"{_fmt(r['cluster_layer'], 'd')} | {r['tokens_after']} | {r['gflops']:.1f} | {r['flops_ratio']:.2f}x | "
            f"{r['backbone_ms']:.0f} | {r['backbone_speedup']:.2f}x | {_timed(r, 'compiled_backbone')} | "
            f"{_timed(r, 'onnxruntime_backbone')} | {_fmt(r.get('e2e_ms'), '.0f')} | "
            f"{_fmt(r.get('e2e_speedup'), '.2f')} | {_fmt(r.get('train_step_ms'), '.0f')} | "
            f"{_fmt(r.get('train_step_speedup'), '.2f')} | {memory} | {_fmt(r.get('box_ap'), '.2f')} | "
            f"{_fmt(r.get('mask_ap'), '.2f')} |")
    first = rows[0]
    lines.append(f"\nDevice: {first['device']}, {first['threads']} threads, autocast {first.get('amp', 'fp32')}; "
                 f"photo {first['photo']} (and the next sample photos for larger batches).")
    runs = {(r["model"], r["size"], r["batch"]): r for r in rows}
    for (model, size, batch), r in runs.items():  # what each run's rows are the median of, and its weights
        lines.append(f"- {model} {size} px batch {batch}: median of {r['iters']} interleaved rounds after warm-up; "
                     f"weights: {r['weights']}.")
    return "\n".join(lines) + "\n"


def write_report(rows: List[Dict], folder: str) -> List[str]:
    """benchmark.md and the PNG plots in ``folder``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, "benchmark.md")]
    with open(paths[0], "w") as f:
        f.write(markdown(rows))
    reduced = [r for r in rows if r["reducer"] in REDUCER_STYLE and r["reducer"] not in ("none", "detectron2")]
    for name, plot in (("speedup_vs_flops.png", plot_speedup_vs_flops), ("speedup_vs_size.png", plot_speedup_vs_size),
                       ("ap_vs_speed.png", plot_ap_vs_speed)):
        path = os.path.join(folder, name)
        if plot(rows, reduced, path):
            paths.append(path)
    return paths


def _save(fig, ax, path: str, legend_size: int) -> bool:
    import matplotlib.pyplot as plt

    if ax.lines or ax.collections:
        ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_speedup_vs_flops(rows: List[Dict], reduced: List[Dict], path: str) -> bool:
    """Measured backbone speed-up against the FLOPs ratio, per reducer (marker size: input size)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    top = max([r["flops_ratio"] for r in reduced] + [r["backbone_speedup"] for r in reduced] + [1.0]) * 1.05
    ax.plot([1, top], [1, top], "--", color="grey", label="ideal (speed-up = FLOPs ratio)")
    for name in sorted({r["reducer"] for r in reduced}):
        pts = [r for r in reduced if r["reducer"] == name]
        ax.scatter([r["flops_ratio"] for r in pts], [r["backbone_speedup"] for r in pts], color=REDUCER_STYLE[name],
                   label=name, s=[12 + 10 * r["size"] / 256 for r in pts], alpha=0.8)
    ax.set(xlabel="FLOPs ratio (baseline / reduced)", ylabel="measured backbone speed-up (x)",
           title="Speed-up vs FLOPs ratio (marker size: input size)")
    return _save(fig, ax, path, 8)


def plot_speedup_vs_size(rows: List[Dict], reduced: List[Dict], path: str) -> bool:
    """Backbone speed-up against the input size, one line per (reducer, model, keep, batch)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for (name, model, keep, batch) in sorted({(r["reducer"], r["model"], r["keep_ratio"], r["batch"]) for r in reduced}):
        pts = sorted((r for r in reduced if (r["reducer"], r["model"], r["keep_ratio"], r["batch"]) == (name, model, keep, batch)),
                     key=lambda r: r["size"])
        if len({r["size"] for r in pts}) > 1:
            ax.plot([r["size"] for r in pts], [r["backbone_speedup"] for r in pts], "o-", color=REDUCER_STYLE[name],
                    alpha=0.4 + 0.6 * (keep == max(r2["keep_ratio"] for r2 in reduced)),
                    label=f"{name} {model} keep {keep} batch {batch}")
    ax.set(xlabel="input size (px)", ylabel="backbone speed-up (x)", title="Speed-up vs input size")
    return _save(fig, ax, path, 6)


def plot_ap_vs_speed(rows: List[Dict], reduced: List[Dict], path: str) -> bool:
    """Mask AP against the end-to-end speed-up per reducer, the baseline dotted (False: no AP rows)."""
    import matplotlib.pyplot as plt

    with_ap = [r for r in reduced if r.get("mask_ap") is not None and r.get("e2e_speedup") is not None]
    if not with_ap:
        return False
    fig, ax = plt.subplots(figsize=(6, 5))
    for name in sorted({r["reducer"] for r in with_ap}):
        pts = sorted((r for r in with_ap if r["reducer"] == name), key=lambda r: -r["keep_ratio"])  # by keep ratio
        ax.plot([r["e2e_speedup"] for r in pts], [r["mask_ap"] for r in pts], "o-", color=REDUCER_STYLE[name], label=name)
    for r in rows:
        if r["reducer"] == "none" and r.get("mask_ap") is not None:
            ax.axhline(r["mask_ap"], color="k", lw=0.8, ls=":")
    ax.set(xlabel="end-to-end speed-up (x)", ylabel="mask AP", title="AP vs end-to-end speed-up (dotted: baseline)")
    return _save(fig, ax, path, 8)


def main(argv=None) -> List[str]:
    """Merge benchmark JSON files into one (``--json``) and write the report from all their rows."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("inputs", nargs="+", help="JSON files written by python -m ailurus.experiments.benchmark --json")
    parser.add_argument("--json", required=True, help="the merged rows")
    parser.add_argument("--report", required=True, help="folder for benchmark.md and the plots")
    args = parser.parse_args(argv)
    rows = []
    for path in args.inputs:
        with open(path) as f:
            rows += json.load(f)["rows"]
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"rows": rows}, f, indent=1)
    paths = [args.json] + write_report(rows, args.report)
    for path in paths:
        print(f"wrote {path}")
    return paths


if __name__ == "__main__":
    main()
