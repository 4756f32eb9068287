"""Train and evaluate a config: the one runner behind the demo and the accuracy study.

Training goes through ``train_net.py`` (a finished run is reused, an interrupted one resumes);
evaluation is Detectron2's ``inference_on_dataset`` with the config's ``COCOEvaluator``. Results of
long stages are cached as JSON files (``cached``), so reruns skip what is done.
"""
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog
from detectron2.evaluation import inference_on_dataset

from ailurus.checkpoint import StrictCheckpointer
from ailurus.vit import padding_tokens, validate_arguments

REPO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
# Val images whose clusters are inspected for tokens kept and the image keep ratio.
INSPECTED_IMAGES = 10


# Where a cached result records the AiluRus settings it was made under.
SETTINGS_KEY = "ailurus_settings"
# Results cached without that record were made before it existed, when these were the behaviour.
UNRECORDED_SETTINGS = {"span_windows": False}


def cached(path: str, compute: Callable[[], Dict], settings: Optional[Dict] = None) -> Dict:
    """``compute()``'s JSON result, stored at ``path`` the first time (atomically).

    With ``settings`` (``resolved_settings`` of what ``compute`` runs), a stored result is reused
    only if it was made under the same settings, so a changed default never returns a stale
    result; one stored without a record counts as made under ``UNRECORDED_SETTINGS``.
    """
    if os.path.isfile(path):
        with open(path) as f:
            stored = json.load(f)
        recorded = stored.pop(SETTINGS_KEY, None)
        if settings is None or (recorded or {**settings, **UNRECORDED_SETTINGS}) == settings:
            return stored
        print(f"{path} was made under other AiluRus settings; computing it again", flush=True)
    result = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result if settings is None else {**result, SETTINGS_KEY: settings}, f)
    os.replace(path + ".tmp", path)
    return result


def resolved_settings(config: str, opts: Sequence[str]) -> Dict:
    """The AiluRus settings of ``config`` with ``opts``, defaults filled in (what an evaluation
    depends on besides the weights and the config's other keys), without building a model."""
    net = LazyConfig.apply_overrides(LazyConfig.load(config), list(opts)).model.backbone.net
    return asdict(validate_arguments({k: v for k, v in net.items() if k != "_target_"}))


def train(config: str, output_dir: str, opts: Sequence[str] = (), quiet: bool = False) -> str:
    """``train_net.py --config-file config`` with ``opts``; returns the final weights. A finished
    run is reused, an interrupted one resumes from its last checkpoint (``--resume``)."""
    final = os.path.join(output_dir, "model_final.pth")
    if os.path.isfile(final):
        print(f"found {final}; reusing it (delete {output_dir} to train again)", flush=True)
        return final
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", config, "--resume",
           f"train.output_dir={output_dir}", *opts]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if quiet else None)
    return final


def load_model(config: str, weights: str, opts: Sequence[str] = ()) -> Tuple[object, torch.nn.Module]:
    """(config with ``opts``, its model in eval mode with ``weights`` loaded strictly)."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), list(opts))
    model = instantiate(cfg.model).eval()
    StrictCheckpointer(model).load(weights)
    return cfg, model


def evaluate(config: str, weights: str, opts: Sequence[str], output_dir: str) -> Dict:
    """COCO AP of ``weights`` under ``config`` with ``opts`` on its test set, and what the backbone
    kept on the first ``INSPECTED_IMAGES`` val images.

    Returns:
        box_ap, box_ap50, mask_ap; images and seconds of the evaluation (``inference_on_dataset``);
        unfold: the unfold the backbone used;
        tokens_after: mean tokens per image (varies per image with an adaptive budget);
        image_keep_ratio: clusters anchored on image tokens per image token (padding counts in
        keep_ratio, so this is what the image itself keeps);
        padding_share: the share of the canvas's tokens that are padding;
        canvas: the canvas (H, W) in pixels of the first inspected image.
    """
    cfg, model = load_model(config, weights, opts)
    cfg.dataloader.evaluator.output_dir = output_dir
    records = DatasetCatalog.get(cfg.dataloader.test.dataset.names)
    start = time.perf_counter()
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    seconds = time.perf_counter() - start
    return {"box_ap": results["bbox"]["AP"], "box_ap50": results["bbox"]["AP50"], "mask_ap": results["segm"]["AP"],
            "images": len(records), "seconds": seconds, "unfold": model.backbone.net.unfold_mode,
            **kept_tokens(model, instantiate(cfg.dataloader.test.mapper), records[:INSPECTED_IMAGES])}


def kept_tokens(model: torch.nn.Module, mapper, records: Sequence[Dict]) -> Dict:
    """tokens_after, image_keep_ratio, padding_share and canvas (see ``evaluate``) over ``records``,
    one image at a time."""
    net = model.backbone.net
    image_tokens = image_clusters = all_tokens = 0
    kept, canvases = [], []
    with torch.no_grad():
        for record in records:
            images = model.preprocess_image([mapper(record)]).tensor
            _, state = model.backbone.forward_with_state(images)
            is_pad = padding_tokens(images, net.patch_embed.proj.kernel_size)[0].reshape(-1)
            rows, cols = state.positions[0, :, 0], state.positions[0, :, 1]
            image_tokens += int((~is_pad).sum())
            all_tokens += is_pad.numel()
            canvases.append(list(images.shape[-2:]))
            image_clusters += int((~is_pad[rows * state.grid_hw[1] + cols]).sum())
            kept.append(int(state.tokens_per_image[0]))
    return {"tokens_after": statistics.mean(kept), "image_keep_ratio": image_clusters / image_tokens,
            "padding_share": 1 - image_tokens / all_tokens, "canvas": canvases[0]}
