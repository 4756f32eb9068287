"""Give models the weights a config names, or one shared random init when there are none."""
import os
from typing import Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer


def load_config_weights(models: Sequence[torch.nn.Module], cfg) -> str:
    """Load ``cfg.train.init_checkpoint`` into every model if that file exists; otherwise copy the
    first model's (random, seeded by the caller) weights into the others. Nothing is downloaded.

    Returns:
        a description of the weights used, for reports.
    """
    spec = cfg.get("train", {}).get("init_checkpoint") or ""
    path = spec.split("?")[0]
    if path and os.path.isfile(path):
        for model in models:
            DetectionCheckpointer(model).load(spec)
        return path
    reference = models[0].state_dict()
    for model in models[1:]:
        model.load_state_dict(reference, strict=True)
    return f"random init (no checkpoint at {path or 'train.init_checkpoint'})"
