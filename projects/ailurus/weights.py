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


class CheckpointMismatch(ValueError):
    """A checkpoint whose parameters are not exactly those of the model."""


class StrictCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` for evaluation: refuses a checkpoint that does not cover the model
    exactly (missing, extra or reshaped parameters), since evaluating partly random or truncated
    weights would be a silently wrong result."""

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        missing, unexpected = list(incompatible.missing_keys), list(incompatible.unexpected_keys)
        wrong = [f"{key} {tuple(got)} in the checkpoint vs {tuple(want)} in the model"
                 for key, got, want in incompatible.incorrect_shapes]
        if missing or unexpected or wrong:
            examples = "; ".join((wrong + missing + unexpected)[:5])
            raise CheckpointMismatch(
                f"the checkpoint does not fit the model built from this config: {len(wrong)} parameters "
                f"with other shapes, {len(missing)} missing, {len(unexpected)} not in the model (e.g. "
                f"{examples}). Was it trained with another config or other overrides? Evaluate it with those."
            )
        return incompatible
