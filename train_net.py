#!/usr/bin/env python
"""Train and evaluate ViTDet / AiluRus Mask R-CNN with Detectron2's LazyConfig.

    python train_net.py --config-file configs/vitdet_ailurus.py                     # train on COCO
    python train_net.py --config-file configs/vitdet_ailurus.py --eval-only train.init_checkpoint=model.pth
    python train_net.py --config-file configs/vitdet_ailurus.py model.backbone.net.keep_ratio=0.4
    python train_net.py --config-file configs/demo/vitdet_demo_ailurus.py --num-gpus 2   # 2 DDP processes

Detectron2's lazy-config trainer with our additions: without CUDA it trains on the CPU (AMP off,
gloo for several processes); it checks the config, overrides, AiluRus knobs, datasets and weights
before building the model, loads checkpoints safely and saves them atomically, and stops on bad
input with one clear message and exit code 2 instead of a traceback (docs/robustness.md).
"""
import difflib
import json
import logging
import os
import sys
import tempfile

import ailurus  # noqa: F401  first: registers the AiluRus backbone and quiets library deprecation notices
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog
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
from torch.multiprocessing import ProcessExitedException

from ailurus import AiluRusViT
from ailurus.checkpoint import CheckpointError, SafeCheckpointer, StrictCheckpointer, read_checkpoint
from ailurus.data import DatasetMissing, UnreadableImage, check_datasets
from ailurus.data.check import config_dataset_names, loader_dataset_names
from ailurus.vit import NonFiniteImage, validate_arguments

logger = logging.getLogger("ailurus")


class UsageError(RuntimeError):
    """A problem with the command line, the config or the files it names."""


# Errors that end a run with one message and exit code 2: their text says what is wrong and how to fix it.
USAGE_ERRORS = (UsageError, CheckpointError, UnreadableImage, NonFiniteImage)


def one_message(error: Exception) -> str:
    """The error's own message; for one re-raised from a DataLoader worker, without the worker's traceback."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(type(error).__module__) else last
    return text


def load_config(args):
    """The config with overrides applied; every override key must already exist in it."""
    if not args.config_file:
        raise UsageError("no config given: pass --config-file FILE, e.g. --config-file configs/vitdet_ailurus.py.")
    if not os.path.isfile(args.config_file):
        raise UsageError(f"--config-file {args.config_file} does not exist.")
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
    """AiluRus settings must be valid, datasets and the initial checkpoint on disk and readable:
    nothing is downloaded at run time."""
    net = cfg.model.get("backbone", {}).get("net", {})
    target = net.get("_target_")
    if isinstance(target, type) and issubclass(target, AiluRusViT):
        try:
            validate_arguments({k: net[k] for k in net if k != "_target_"})
        except ValueError as e:
            raise UsageError(f"invalid model.backbone.net value in the config or its overrides: {e}") from None
    try:
        check_datasets(config_dataset_names(cfg, train=not eval_only))
    except DatasetMissing as e:
        raise UsageError(str(e)) from e
    spec = cfg.train.init_checkpoint or ""
    path = spec.split("?")[0]
    if eval_only and not path:
        raise UsageError("--eval-only needs weights to evaluate: set train.init_checkpoint=PATH.")
    if eval_only and not cfg.dataloader.get("evaluator"):
        raise UsageError("--eval-only needs an evaluator: the config sets none (dataloader.evaluator).")
    if path and "://" not in path:
        if not os.path.isfile(path):
            raise UsageError(
                f"train.init_checkpoint={spec!r} does not exist. Put the checkpoint there, or override "
                "train.init_checkpoint=PATH (or train.init_checkpoint='' to start from random weights)."
            )
        read_checkpoint(path)  # empty, truncated, not a checkpoint, or unsafe: CheckpointError


def build_loader(loader_cfg):
    """Instantiate a data loader; an annotation file that does not parse is a ``UsageError`` naming it."""
    try:
        return instantiate(loader_cfg)
    except json.JSONDecodeError as e:
        names = loader_dataset_names(loader_cfg)
        files = [MetadataCatalog.get(n).get("json_file") for n in names]
        bad = [f for f in files if f and not _parses(f)] or files
        raise UsageError(
            f"annotation file {', '.join(map(str, bad))} is not valid JSON: {e.msg} at line {e.lineno}, "
            f"column {e.colno} (character {e.pos}). Fix or re-export the file."
        ) from None


def _parses(path: str) -> bool:
    try:
        with open(path) as f:
            json.load(f)
        return True
    except ValueError:
        return False


def build_model(cfg):
    """The config's model; a constructor's ``ValueError`` (an invalid knob) is a ``UsageError``."""
    try:
        return instantiate(cfg.model).to(cfg.train.device)
    except ValueError as e:
        raise UsageError(f"cannot build the model from this config: {e}") from None


class _NoTracebackForUsageErrors(logging.Filter):
    """Detectron2's trainer logs any exception with its traceback; ours carry their own explanation."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], USAGE_ERRORS):
            record.msg = f"{record.getMessage()} {one_message(record.exc_info[1])}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def do_test(cfg, model):
    if not cfg.dataloader.get("evaluator"):  # dataloader.evaluator=null: train without evaluating
        return {}
    results = inference_on_dataset(model, build_loader(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    print_csv_format(results)
    return results


def do_train(args, cfg):
    model = build_model(cfg)
    logger.info("Model:\n%s", model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = build_loader(cfg.dataloader.train)
    ddp_kwargs = dict(cfg.train.ddp)
    if cfg.train.device == "cpu":
        ddp_kwargs["device_ids"] = None
    model = create_ddp_model(model, **ddp_kwargs)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = SafeCheckpointer(model, cfg.train.output_dir, trainer=trainer)
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
    # check_inputs already ran in the parent (check_before_launch): not again per worker, since it
    # reads the whole initial checkpoint.
    cfg = load_config(args)
    default_setup(cfg, args)
    logging.getLogger("detectron2.engine.train_loop").addFilter(_NoTracebackForUsageErrors())
    if args.eval_only:
        model = build_model(cfg)
        StrictCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, create_ddp_model(model))
    do_train(args, cfg)


def worker(args, error_dir):
    """``main`` in a launched process. With several processes, a usage error is written to
    ``error_dir`` and the process exits with code 2, so the parent can print it once, cleanly."""
    try:
        main(args)
        comm.synchronize()  # no rank tears down its process group while another still talks to it
    except USAGE_ERRORS as e:
        if error_dir is None:
            raise
        with open(os.path.join(error_dir, f"rank{comm.get_rank()}.txt"), "w") as f:
            f.write(one_message(e))
        sys.exit(2)
    finally:
        # Detectron2's launch leaves the process group alive; at interpreter exit gloo's worker
        # threads may still hold work objects, and destroying them then aborts the process
        # ("terminate called without an active exception", SIGABRT) after a successful run.
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def run(args) -> int:
    world_size = args.num_gpus * args.num_machines
    with tempfile.TemporaryDirectory(prefix="train_net_errors_") as error_dir:
        try:
            launch(
                worker,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(args, error_dir if world_size > 1 else None),
            )
        except USAGE_ERRORS as e:
            print(f"train_net.py: error: {one_message(e)}", file=sys.stderr)
            return 2
        except ProcessExitedException:
            messages = sorted(os.listdir(error_dir))
            if not messages:
                raise
            with open(os.path.join(error_dir, messages[0])) as f:
                print(f"train_net.py: error: {f.read()}", file=sys.stderr)
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
    except USAGE_ERRORS as e:
        print(f"train_net.py: error: {one_message(e)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(args))
