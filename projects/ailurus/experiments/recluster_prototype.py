"""PROTOTYPE (removed in the next commit): a second clustering stage, measured on the nuclei canvas.

With ``AILURUS_SECOND="layer:keep"`` set, ``AiluRusViT.forward_tokens`` unfolds the clusters
(``residual``) before block ``layer``, clusters that grid again into ``keep * N`` tokens with the
same density-peak clustering, and runs the remaining blocks on those. This script evaluates
settings ``name=layer1:keep1[:layer2:keep2]`` on the frozen nuclei detectors of the study's cache
(``output/study/nuclei/seed*/baseline``) on the 512 x 1024 canvas, with their FLOPs ratio, and
writes one row per setting and seed:

    python -m ailurus.experiments.recluster_prototype --seeds 0 1 2 3 4 5 6 7 8 9 \
        --json reports/recluster/rows.json --settings E=2:0.5:6:0.3 single=2:0.4
"""
import argparse
import json
import os
import statistics

import torch

from .flops import count_flops
from .runner import load_model
from .study import evaluate_row, setting_opts

CONFIG = "configs/study/vitdet_s_nuclei_1024_filled.py"


def weights(seed: int) -> str:
    return f"output/study/nuclei/seed{seed}/baseline/model_final.pth"


def backbone_flops(opts) -> float:
    _, model = load_model(CONFIG, weights(0), opts)
    with torch.no_grad():
        return count_flops(model.backbone, (torch.randn(1, 3, 512, 1024),))[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--json", default="reports/recluster/rows.json")
    parser.add_argument("--work-dir", default="output/recluster")
    parser.add_argument("--settings", nargs="+", required=True, help="name=layer1:keep1[:layer2:keep2]")
    args = parser.parse_args()
    rows = json.load(open(args.json))["rows"] if os.path.isfile(args.json) else []
    base = backbone_flops(["model.backbone.net.enabled=False"])
    for spec in args.settings:
        name, values = spec.split("=")
        layer, keep, *second = values.split(":")
        if second:
            os.environ["AILURUS_SECOND"] = ":".join(second)
        else:
            os.environ.pop("AILURUS_SECOND", None)
        opts = setting_opts("ailurus", float(keep), int(layer), "residual")
        flops_ratio = base / backbone_flops(opts)
        changes = []
        for seed in args.seeds:
            off = json.load(open(f"output/study/nuclei_1024_filled/seed{seed}/eval/off.json"))
            ev = evaluate_row(CONFIG, weights(seed), opts, os.path.join(args.work_dir, f"{name}_seed{seed}"))
            rows = [r for r in rows if (r["name"], r["seed"]) != (name, seed)] + [dict(
                name=name, seed=seed, cluster_layer=int(layer), keep_ratio=float(keep),
                second_layer=int(second[0]) if second else None, second_keep=float(second[1]) if second else None,
                flops_ratio=flops_ratio, box_ap=ev["box_ap"], mask_ap=ev["mask_ap"],
                box_ap_change=ev["box_ap"] - off["box_ap"], mask_ap_change=ev["mask_ap"] - off["mask_ap"])]
            changes.append(ev["mask_ap"] - off["mask_ap"])
        print(f"{name}: FLOPs ratio {flops_ratio:.2f}x, mask AP change {statistics.mean(changes):+.2f} +- "
              f"{statistics.stdev(changes):.2f}", flush=True)
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"rows": sorted(rows, key=lambda r: (r["name"], r["seed"]))}, f, indent=1)


if __name__ == "__main__":
    main()
