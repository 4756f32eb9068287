#!/usr/bin/env python
"""Train and evaluate ViTDet / AiluRus Mask R-CNN with Detectron2's LazyConfig.

    python train_net.py --config-file configs/vitdet_ailurus.py                     # train on COCO
    python train_net.py --config-file configs/vitdet_ailurus.py --eval-only train.init_checkpoint=model.pth
    python train_net.py --config-file configs/vitdet_ailurus.py model.backbone.net.keep_ratio=0.4
    python train_net.py --config-file configs/demo/vitdet_demo_ailurus.py --num-gpus 2   # 2 DDP processes

Detectron2's lazy-config trainer with our additions: without CUDA it trains on the CPU (AMP off,
gloo for several processes); it checks datasets, weights and override keys before building the
model and stops with one clear message instead of a traceback.
"""
import difflib
import logging
import os
import sys

import ailurus  # noqa: F401  first: registers the AiluRus backbone and quiets library deprecation notices
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from omegaconf import OmegaConf

from ailurus.data import DatasetMissing, check_datasets
from ailurus.data.check import config_dataset_names
from ailurus.weights import CheckpointMismatch, StrictCheckpointer

logger = logging.getLogger("ailurus")


class UsageError(RuntimeError):
    """A problem with the command line, the config or the files it names."""


def load_config(args):
    """The config with overrides applied; every override key must already exist in it."""
    cfg = LazyConfig.load(args.config_file)
    for override in args.opts:
        key = override.split("=", 1)[0].lstrip("+~")
        if "=" not in override:
            raise UsageError(f"override '{override}' is not of the form key=value")
        if not override.startswith("+") and OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            known = _all_keys(cfg)
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UsageError(
                f"override '{override}': the config {args.config_file} has no key '{key}'.{hint} "
                "(Prefix with '+' to add a new key on purpose.)"
            )
    try:
        cfg = LazyConfig.apply_overrides(cfg, args.opts)
    except Exception as e:  # hydra's parse errors and Detectron2's KeyError say what is wrong
        raise UsageError(f"could not apply overrides {args.opts}: {e}") from e
    if not torch.cuda.is_available():
        cfg.train.device = "cpu"
        cfg.train.amp.enabled = False
        cfg.train.ddp.fp16_compression = False  # gloo: no fp16 all-reduce
    return cfg


def _all_keys(cfg, prefix=""):
    keys = []
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        keys.append(name)
        if OmegaConf.is_dict(v):
            keys += _all_keys(v, name + ".")
    return keys


def check_inputs(cfg, eval_only: bool) -> None:
    """Datasets and the initial checkpoint must be on disk: nothing is downloaded at run time."""
    try:
        check_datasets(config_dataset_names(cfg, train=not eval_only))
    except DatasetMissing as e:
        raise UsageError(str(e)) from e
    spec = cfg.train.init_checkpoint or ""
    path = spec.split("?")[0]
    if eval_only and not path:
        raise UsageError("--eval-only needs weights to evaluate: set train.init_checkpoint=PATH.")
    if path and "://" not in path and not os.path.isfile(path):
        raise UsageError(
            f"train.init_checkpoint={spec!r} does not exist. Put the checkpoint there, or override "
            "train.init_checkpoint=PATH (or train.init_checkpoint='' to start from random weights)."
        )


def do_test(cfg, model):
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    print_csv_format(results)
    return results


def do_train(args, cfg):
    model = instantiate(cfg.model).to(cfg.train.device)
    logger.info("Model:\n%s", model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    ddp_kwargs = dict(cfg.train.ddp)
    if cfg.train.device == "cpu":
        ddp_kwargs["device_ids"] = None
    model = create_ddp_model(model, **ddp_kwargs)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def main(args):
    cfg = load_config(args)
    check_inputs(cfg, args.eval_only)
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model).to(cfg.train.device)
        StrictCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, create_ddp_model(model))
    do_train(args, cfg)


def run(args) -> int:
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except (UsageError, CheckpointMismatch) as e:
        print(f"train_net.py: error: {e}", file=sys.stderr)
        return 2
    return 0


def check_before_launch(args) -> None:
    """Fail in the parent process, before any worker starts, on config and input problems."""
    cfg = load_config(args)
    check_inputs(cfg, args.eval_only)


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    try:
        check_before_launch(args)
    except UsageError as e:
        print(f"train_net.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(args))
