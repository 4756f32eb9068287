"""`make demo`: fine-tune a ViTDet-S (DINOv2 ViT-S/16 weights converted offline by `make weights`)
on the embedded dataset, then evaluate the same weights with AiluRus off and on (no fine-tuning),
save the clusters of a val image, and compare ViTDet-S with and without AiluRus on a real photo
at 1024. Prints the time each stage took.

    python -m ailurus.demo [--out-dir demo_out] [--skip-photo]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, Tuple

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.utils.logger import setup_logger
from PIL import Image
from tabulate import tabulate

from . import benchmark
from .data import demo as demo_data
from .visualize import model_clusters_figure
from .weights import StrictCheckpointer

REPO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
TRAIN_CONFIG = os.path.join(REPO, "configs", "demo", "vitdet_s_demo_baseline.py")
EVAL_CONFIG = os.path.join(REPO, "configs", "demo", "vitdet_s_demo_ailurus.py")
PHOTO_CONFIG = os.path.join(REPO, "configs", "vitdet_s_ailurus.py")


def train(output_dir: str) -> str:
    """Train the demo config with train_net.py; an interrupted run continues (--resume), a
    finished one is reused."""
    final = os.path.join(output_dir, "model_final.pth")
    if os.path.isfile(final):
        print(f"found {final}; reusing it (delete {output_dir} to train again)", flush=True)
        return final
    # No evaluation at the end of training: the next stage evaluates these weights, AiluRus off and on.
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", TRAIN_CONFIG, "--resume",
           f"train.output_dir={output_dir}", "dataloader.evaluator=null"]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return final


def evaluate(weights: str, enabled: bool, output_dir: str) -> Tuple[Dict, torch.nn.Module]:
    """COCO box / mask AP and speed of the demo model with AiluRus ``enabled`` or not, and the model."""
    cfg = LazyConfig.load(EVAL_CONFIG)
    cfg.model.backbone.net.enabled = enabled
    cfg.dataloader.evaluator.output_dir = os.path.join(output_dir, "ailurus" if enabled else "baseline")
    model = instantiate(cfg.model).eval()
    StrictCheckpointer(model).load(weights)
    loader = instantiate(cfg.dataloader.test)
    start = time.perf_counter()
    results = inference_on_dataset(model, loader, instantiate(cfg.dataloader.evaluator))
    seconds = time.perf_counter() - start
    num_images = len(DatasetCatalog.get(cfg.dataloader.test.dataset.names))
    net = model.backbone.net
    grid = (cfg.model.backbone.square_pad // cfg.model.backbone.net.patch_size) ** 2  # tokens of the canvas
    return {
        "AiluRus": f"on ({net.unfold_mode} unfold)" if enabled else "off",
        "box AP": results["bbox"]["AP"],
        "box AP50": results["bbox"]["AP50"],
        "mask AP": results["segm"]["AP"],
        "images/s": num_images / seconds,
        "tokens": net.clusters_for(grid) if enabled else grid,
    }, model


def save_val_clusters(model, out_png: str) -> None:
    cfg = LazyConfig.load(EVAL_CONFIG)
    record = DatasetCatalog.get(cfg.dataloader.test.dataset.names)[0]
    mapper = instantiate(cfg.dataloader.test.mapper)
    inputs = mapper(record)
    figure = model_clusters_figure(model, inputs, "val image")
    figure.resize((figure.width * 2, figure.height * 2), Image.NEAREST).save(out_png)

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
        sys.exit(f"ailurus.demo: error: {pretrained} not found. Run `make weights` (or `make demo`, which does).")
    stage = Stages()

    stage("1/4 embedded dataset")
    demo_data.build(demo_data.demo_root())
    stage("2/4 fine-tuning ViTDet-S from DINOv2 weights (AiluRus off) on the CPU")
    weights = train(args.train_dir)

    stage("3/4 evaluating the same weights, AiluRus off and on (no fine-tuning)")
    rows = []
    for enabled in (False, True):
        row, model = evaluate(weights, enabled, args.out_dir)
        rows.append(row)
    png = os.path.join(args.out_dir, "clusters_val.png")
    save_val_clusters(model, png)
    table = tabulate(rows, headers="keys", floatfmt=".2f")
    with open(os.path.join(args.out_dir, "demo_results.json"), "w") as f:
        json.dump(rows, f, indent=2)

    if not args.skip_photo:
        stage("4/4 ViTDet-S (DINOv2 weights) at 1024 on a real photo: baseline vs AiluRus (keep 0.5)")
        benchmark.main(["--config-file", PHOTO_CONFIG, "--iters", "3", "--no-e2e", "--no-detectron2",
                        "--json", os.path.join(args.out_dir, "photo_benchmark.json")])
        from . import visualize

        visualize.main(["--config-file", PHOTO_CONFIG, "--out", os.path.join(args.out_dir, "clusters_photo.png")])
    stage("done")

    print("\n== demo dataset, same weights, AiluRus off vs on")
    print(table)
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
