"""Checkpoint files: safe loading of untrusted .pkl/.pth, official-format .pkl, atomic saves."""
import os
import pickle

import pytest
import torch
from conftest import tiny_vit_kwargs

from ailurus import AiluRusViT
from ailurus.checkpoint import CheckpointError, SafeCheckpointer, StrictCheckpointer, UnsafeCheckpoint, read_checkpoint


class Payload:
    """Unpickling this creates ``path``: a stand-in for arbitrary code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mknod, (self.path,))


def _numpy_weights(model: torch.nn.Module):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def write_payload_checkpoints(folder, model: torch.nn.Module, marker: str):
    """A .pkl and a .pth that hold real weights plus a payload; returns their paths."""
    pkl, pth = os.path.join(folder, "evil.pkl"), os.path.join(folder, "evil.pth")
    with open(pkl, "wb") as f:
        pickle.dump({"model": _numpy_weights(model), "__author__": "x", "extra": Payload(marker)}, f)
    torch.save({"model": model.state_dict(), "extra": Payload(marker)}, pth)
    return pkl, pth


@pytest.mark.parametrize("suffix", ["pkl", "pth"])
def test_payload_checkpoints_are_refused_and_never_run(tmp_path, suffix):
    model = AiluRusViT(**tiny_vit_kwargs())
    marker = str(tmp_path / "pwned")
    paths = dict(zip(["pkl", "pth"], write_payload_checkpoints(str(tmp_path), model, marker)))
    with pytest.raises(UnsafeCheckpoint) as err:
        SafeCheckpointer(model).load(paths[suffix])
    assert not os.path.exists(marker)
    assert paths[suffix] in str(err.value) and "posix.mknod" in str(err.value)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_official_format_pkl_loads_and_matches(tmp_path, protocol):
    """Detectron2's model-zoo .pkl: {"model": {name: numpy array}, "__author__": ...}."""
    source = AiluRusViT(**tiny_vit_kwargs())
    path = str(tmp_path / "model_final.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": _numpy_weights(source), "__author__": "Detectron2 model zoo"}, f, protocol=protocol)
    target = AiluRusViT(**tiny_vit_kwargs())
    StrictCheckpointer(target).load(path)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key


def _write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


@pytest.mark.parametrize("kind", ["empty", "truncated-pth", "truncated-pkl", "text", "not-a-dict"])
def test_unreadable_checkpoints_are_a_clear_error(tmp_path, kind):
    model = AiluRusViT(**tiny_vit_kwargs())
    full = tmp_path / "full.pth"
    torch.save({"model": model.state_dict()}, full)
    whole = full.read_bytes()
    path = {
        "empty": lambda: _write(tmp_path / "empty.pth", b""),
        "truncated-pth": lambda: _write(tmp_path / "half.pth", whole[: len(whole) // 2]),
        "truncated-pkl": lambda: _write(tmp_path / "half.pkl", pickle.dumps({"model": _numpy_weights(model)})[:300]),
        "text": lambda: _write(tmp_path / "notes.pth", b"these are not weights\n"),
        "not-a-dict": lambda: torch.save([1, 2, 3], tmp_path / "list.pth") or str(tmp_path / "list.pth"),
    }[kind]()
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert path in str(err.value)
    assert any(w in str(err.value) for w in ("empty", "truncated", "not a checkpoint"))


def test_mismatch_message_counts_reshaped_parameters_once(tmp_path):
    source = AiluRusViT(**tiny_vit_kwargs())
    state = source.state_dict()
    state["blocks.0.attn.qkv.bias"] = torch.zeros(7)
    path = str(tmp_path / "reshaped.pth")
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as err:
        StrictCheckpointer(AiluRusViT(**tiny_vit_kwargs())).load(path)
    assert "1 parameters with other shapes, 0 missing, 0 not in the model" in str(err.value)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = AiluRusViT(**tiny_vit_kwargs())
    checkpointer = SafeCheckpointer(model, save_dir=str(tmp_path))
    checkpointer.save("model_0000001")
    before = (tmp_path / "model_0000001.pth").read_bytes()
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with torch.no_grad():
        model.blocks[0].attn.qkv.bias.add_(1.0)
    with pytest.raises(OSError, match="No space left"):
        checkpointer.save("model_0000002")
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no partial file left
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert (tmp_path / "model_0000001.pth").read_bytes() == before
    # and the surviving checkpoint still loads
    SafeCheckpointer(AiluRusViT(**tiny_vit_kwargs()), save_dir=str(tmp_path)).resume_or_load("", resume=True)
