"""Checkpoints: safe loading of untrusted files, atomic saving, strict loading for evaluation.

Unpickling can run code, so a checkpoint is never read with plain ``pickle``:
- ``.pkl`` (Detectron2's model zoo, e.g. the official ViTDet weights: a dict of numpy arrays) is read
  by an unpickler that admits only numpy arrays and dtypes and builtin containers and scalars;
- ``.pth`` (and anything else ``torch.load`` reads) with ``weights_only=True``.
URLs (``detectron2://``, https) are first fetched by Detectron2's PathManager, then read the same way.
"""
import os
import pickle
import re
from typing import Any, BinaryIO, Callable, Dict, Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer

# The only globals a weights pickle needs: numpy arrays (all pickle protocols) and OrderedDict.
_PKL_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


class UnsafeCheckpoint(CheckpointError):
    """A checkpoint whose unpickling would import something a weights file never needs."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint whose parameters are not exactly those of the model."""


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, file, filename: str):
        super().__init__(file, encoding="latin1")  # Detectron2's (Python 2 era) model zoo pickles
        self.filename = filename

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PKL_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeCheckpoint(_unsafe_message(self.filename, f"{module}.{name}"))


def _unsafe_message(filename: str, refused: str) -> str:
    return (
        f"refusing to load checkpoint {filename}: unpickling it would import '{refused}', which a weights "
        "file never needs and which could run arbitrary code. Only numpy arrays, dtypes and builtin "
        "containers (.pkl) or tensors (.pth, torch.load weights_only=True) are loaded. If you trust the "
        "file, re-save its weights as a plain dict of tensors with torch.save."
    )


def read_checkpoint(filename: str) -> Dict[str, Any]:
    """The raw contents of a local checkpoint file, read safely (see the module docstring).

    Raises:
        UnsafeCheckpoint: the file asks for anything but weights.
        CheckpointError: the file is empty, truncated, or not a checkpoint.
    """
    if os.path.getsize(filename) == 0:
        raise CheckpointError(f"checkpoint {filename} is empty (0 bytes): was its download or save interrupted?")
    try:
        if filename.endswith(".pkl"):
            with open(filename, "rb") as f:
                data = _WeightsUnpickler(f, filename).load()
        else:
            data = torch.load(filename, map_location="cpu", weights_only=True)
    except UnsafeCheckpoint:
        raise
    except pickle.UnpicklingError as e:
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))  # torch's weights_only refusal names it
        if refused:
            raise UnsafeCheckpoint(_unsafe_message(filename, refused.group(1))) from None
        raise _unreadable(filename, e) from None
    except (EOFError, RuntimeError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError,
            UnicodeDecodeError) as e:
        raise _unreadable(filename, e) from None
    weights = data.get("model", data) if isinstance(data, dict) else data
    if not isinstance(weights, dict) or not weights:
        raise CheckpointError(
            f"{filename} is not a checkpoint: it holds a {type(weights).__name__}, not a dict of weights."
        )
    return data


def _unreadable(filename: str, error: Exception) -> CheckpointError:
    first_line = (str(error).splitlines() or [""])[0]
    reason = f"{type(error).__name__}: {first_line}"[:160]
    return CheckpointError(
        f"cannot read checkpoint {filename} ({reason}): the file is truncated, corrupt, or not a checkpoint. "
        "Download or copy it again, or point train.init_checkpoint at a Detectron2 .pth / model-zoo .pkl file."
    )


class SafeCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that reads files with ``read_checkpoint`` and writes atomically.

    A save goes to a temporary file that is renamed over the target only once complete, and
    ``last_checkpoint`` is replaced the same way, so a crash or a full disk during a save leaves the
    previous checkpoint and ``last_checkpoint`` intact.
    """

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if not filename.endswith(".pkl"):
            return super()._load_file(filename)  # Detectron2's URL-query handling; reads via _torch_load
        data = read_checkpoint(filename)
        if "model" in data and "__author__" in data:  # Detectron2 model-zoo format
            return data
        data = data.get("blobs", data)  # Caffe2 / Detectron1 model zoo, as Detectron2 reads it
        weights = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}

    def _torch_load(self, filename: str) -> Dict[str, Any]:
        return read_checkpoint(filename)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        _atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        _atomic_write(os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename.encode()))


def _atomic_write(path: str, write: Callable[[BinaryIO], Any]) -> None:
    """Run ``write`` on a temporary file in ``path``'s folder, then rename it to ``path``."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class StrictCheckpointer(SafeCheckpointer):
    """``SafeCheckpointer`` for evaluation: refuses a checkpoint that does not cover the model
    exactly (missing, extra or reshaped parameters), since evaluating partly random or truncated
    weights would be a silently wrong result."""

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        reshaped = {key for key, _, _ in incompatible.incorrect_shapes}
        # Detectron2 drops reshaped parameters before loading, so they are reported missing too.
        missing = [k for k in incompatible.missing_keys if k not in reshaped]
        unexpected = list(incompatible.unexpected_keys)
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
            SafeCheckpointer(model).load(spec)
        return path
    reference = models[0].state_dict()
    for model in models[1:]:
        model.load_state_dict(reference, strict=True)
    return f"random init (no checkpoint at {path or 'train.init_checkpoint'})"
