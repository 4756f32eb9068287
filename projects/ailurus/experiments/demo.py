"""`make demo`: fine-tune a ViTDet-S (DINOv2 ViT-S/16 weights converted offline by `make weights`)
on the embedded dataset, then evaluate the same weights with AiluRus off and on (no fine-tuning),
save the clusters of a val image, and compare ViTDet-S with and without AiluRus on a real photo
at 1024. Prints the time each stage took.

    python -m ailurus.experiments.demo [--out-dir demo_out] [--skip-photo]
"""
import argparse
import json
import os
import sys
import time
from typing import Dict, List

from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger
from PIL import Image
from tabulate import tabulate

from ailurus.data import demo as demo_data

from . import benchmark, visualize
from .runner import REPO, evaluate, load_model, train
from .visualize import model_clusters_figure

TRAIN_CONFIG = os.path.join(REPO, "configs", "demo", "vitdet_s_demo_baseline.py")
EVAL_CONFIG = os.path.join(REPO, "configs", "demo", "vitdet_s_demo_ailurus.py")
PHOTO_CONFIG = os.path.join(REPO, "configs", "vitdet_s_ailurus.py")


def evaluate_demo(weights: str, enabled: bool, output_dir: str) -> Dict:
    """The demo table's row: COCO box / mask AP and speed of the demo model with AiluRus
    ``enabled`` or not (``runner.evaluate``)."""
    opts = [f"model.backbone.net.enabled={enabled}"]
    result = evaluate(EVAL_CONFIG, weights, opts, os.path.join(output_dir, "ailurus" if enabled else "baseline"))
    return {
        "AiluRus": f"on ({result['unfold']} unfold)" if enabled else "off",
        "box AP": result["box_ap"],
        "box AP50": result["box_ap50"],
        "mask AP": result["mask_ap"],
        "images/s": result["images"] / result["seconds"],
        "tokens": result["tokens_after"],
    }


def save_val_clusters(weights: str, out_png: str) -> None:
    """The clusters of the first val image (AiluRus on), drawn at twice the size."""
    cfg, model = load_model(EVAL_CONFIG, weights)
    record = DatasetCatalog.get(cfg.dataloader.test.dataset.names)[0]
    mapper = instantiate(cfg.dataloader.test.mapper)
    inputs = mapper(record)
    figure = model_clusters_figure(model, inputs, "val image")
    figure.resize((figure.width * 2, figure.height * 2), Image.NEAREST).save(out_png)


def photo_line(rows: List[Dict]) -> str:
    """One line for the photo benchmark's rows (the baseline first)."""
    base, ours = rows[0], rows[1]
    return (f"{ours['model']} at {ours['size']} px on the '{ours['photo']}' photo: backbone {ours['backbone_speedup']:.2f}x "
            f"faster with AiluRus (keep {ours['keep_ratio']}, {base['backbone_ms']:.0f} -> {ours['backbone_ms']:.0f} ms, "
            f"median of {ours['iters']}), FLOPs ratio {ours['flops_ratio']:.2f}x")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="demo_out")
    parser.add_argument("--train-dir", default=os.path.join("output", "demo_s"))
    parser.add_argument("--skip-photo", action="store_true", help="skip the ViTDet-S photo benchmark")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    setup_logger(name="d2.evaluation")
    pretrained = LazyConfig.load(TRAIN_CONFIG).train.init_checkpoint
    if not os.path.isfile(pretrained):
        sys.exit(f"ailurus.experiments.demo: error: {pretrained} not found. Run `make weights` (or `make demo`, which does).")
    stage = Stages()

    stage("1/4 embedded dataset")
    demo_data.build(demo_data.demo_root())
    stage("2/4 fine-tuning ViTDet-S from DINOv2 weights (AiluRus off) on the CPU")
    # No evaluation at the end of training: the next stage evaluates these weights, AiluRus off and on.
    weights = train(TRAIN_CONFIG, args.train_dir, ["dataloader.evaluator=null"])

    stage("3/4 evaluating the same weights, AiluRus off and on (no fine-tuning)")
    rows = [evaluate_demo(weights, enabled, args.out_dir) for enabled in (False, True)]
    png = os.path.join(args.out_dir, "clusters_val.png")
    save_val_clusters(weights, png)
    table = tabulate(rows, headers="keys", floatfmt=".2f")
    with open(os.path.join(args.out_dir, "demo_results.json"), "w") as f:
        json.dump(rows, f, indent=2)

    if not args.skip_photo:
        stage("4/4 ViTDet-S (DINOv2 weights) at 1024 on a real photo: baseline vs AiluRus (keep 0.5)")
        photo_rows = benchmark.main(["--config-file", PHOTO_CONFIG, "--iters", "3", "--no-e2e", "--no-detectron2",
                                     "--json", os.path.join(args.out_dir, "photo_benchmark.json")])
        visualize.main(["--config-file", PHOTO_CONFIG, "--out", os.path.join(args.out_dir, "clusters_photo.png")])
    stage("done")

    print("\n== demo dataset, same weights, AiluRus off vs on")
    print(table)
    if not args.skip_photo:
        print(photo_line(photo_rows))
    print(f"cluster picture of a val image: {os.path.abspath(png)}")
    print(stage.summary())


class Stages:
    """Prints each stage's title and, at the next one, how long the previous one took."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.names, self.seconds, self.current = [], [], None

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        if self.current is not None:
            self.names.append(self.current)
            self.seconds.append(now - self.last)
            print(f"   ({self.current}: {now - self.last:.0f} s)", flush=True)
        self.current, self.last = name, now
        if name != "done":
            print(f"== {name}", flush=True)

    def summary(self) -> str:
        rows = [(n, f"{s:.0f} s") for n, s in zip(self.names, self.seconds)]
        return tabulate(rows + [("total", f"{time.perf_counter() - self.start:.0f} s")], headers=["stage", "time"])


if __name__ == "__main__":
    main()
