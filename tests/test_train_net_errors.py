"""train_net.py on bad input: one message, exit code 2, no traceback, nothing executed or lost."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO
from test_checkpoints import write_payload_checkpoints
from test_train_net import DEMO_AILURUS, TINY, _metrics, _run, demo_data, tiny_checkpoint  # noqa: F401  fixtures


def assert_one_clear_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("train_net.py: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr[-3000:]
    for noise in ("Traceback", "ProcessRaisedException", "ProcessExitedException"):
        assert noise not in proc.stderr + proc.stdout


@pytest.fixture
def data_copy(demo_data, tmp_path):  # noqa: F811
    """A private copy of the tiny demo set, to break."""
    root = tmp_path / "data"
    shutil.copytree(demo_data, root)
    return root


def _eval(data_root, tmp_path, *overrides, gpus=1):
    return _run(["--config-file", DEMO_AILURUS, "--eval-only", "--num-gpus", str(gpus),
                 f"train.output_dir={tmp_path / 'out'}"] + TINY + list(overrides), str(data_root))


def _train(data_root, tmp_path, *overrides):
    return _run(["--config-file", DEMO_AILURUS, "train.max_iter=8", "train.log_period=1",
                 f"train.output_dir={tmp_path / 'out'}"] + TINY + list(overrides), str(data_root))


INVALID_KNOBS = [("keep_ratio=1.5", "keep_ratio=1.5"), ("keep_ratio=abc", "keep_ratio='abc'"),
                 ("enabled=no", "enabled='no'"), ("knn_k=2.5", "knn_k=2.5")]


@pytest.mark.parametrize("override, name", INVALID_KNOBS)
def test_invalid_knob_values_in_overrides_are_named_before_anything_is_built(override, name, monkeypatch):
    monkeypatch.syspath_prepend(REPO)
    import train_net
    from detectron2.engine import default_argument_parser

    args = default_argument_parser().parse_args(["--config-file", DEMO_AILURUS, f"model.backbone.net.{override}"])
    with pytest.raises(train_net.UsageError, match="invalid model.backbone.net value") as error:
        train_net.check_inputs(train_net.load_config(args), eval_only=False)
    assert name in str(error.value)


@pytest.mark.parametrize("override, name, gpus", [INVALID_KNOBS[0] + (1,), INVALID_KNOBS[2] + (2,)])
def test_invalid_knob_values_end_the_command_with_one_message(demo_data, tmp_path, override, name, gpus):  # noqa: F811
    proc = _run(["--config-file", DEMO_AILURUS, "--num-gpus", str(gpus), f"train.output_dir={tmp_path}"]
                + TINY + [f"model.backbone.net.{override}"], demo_data)
    assert_one_clear_error(proc, name, "model.backbone.net")


@pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
def test_bad_init_checkpoint_files(demo_data, tiny_checkpoint, tmp_path, kind):  # noqa: F811
    bad = tmp_path / f"{kind}.pth"
    whole = tiny_checkpoint.read_bytes()
    bad.write_bytes({"empty": b"", "truncated": whole[: len(whole) // 3], "text": b"not weights"}[kind])
    proc = _eval(demo_data, tmp_path, f"train.init_checkpoint={bad}")
    assert_one_clear_error(proc, str(bad))


@pytest.mark.parametrize("suffix", ["pkl", "pth"])
@pytest.mark.parametrize("eval_only", [True, False], ids=["eval", "train"])
def test_payload_checkpoints_never_run(demo_data, tmp_path, suffix, eval_only):  # noqa: F811
    from ailurus import AiluRusViT

    marker = tmp_path / "pwned"
    net = AiluRusViT(embed_dim=64, num_heads=2, depth=3, window_block_indexes=[0], img_size=256, cluster_layer=1)
    paths = dict(zip(["pkl", "pth"], write_payload_checkpoints(str(tmp_path), net, str(marker))))
    args = ["--config-file", DEMO_AILURUS, f"train.init_checkpoint={paths[suffix]}", "train.max_iter=1",
            f"train.output_dir={tmp_path / 'out'}"] + TINY
    proc = _run((["--eval-only"] if eval_only else []) + args, demo_data)
    assert_one_clear_error(proc, paths[suffix], "refusing to load")
    assert not marker.exists()


def test_truncated_jpeg_in_evaluation_names_the_file(data_copy, tiny_checkpoint, tmp_path):
    image = sorted((data_copy / "val").iterdir())[1]
    image.write_bytes(image.read_bytes()[:600])
    proc = _eval(data_copy, tmp_path, f"train.init_checkpoint={tiny_checkpoint}")
    assert_one_clear_error(proc, f"cannot read image {image}")


def test_missing_listed_image_names_the_file(data_copy, tiny_checkpoint, tmp_path):
    image = sorted((data_copy / "val").iterdir())[0]
    image.unlink()
    proc = _eval(data_copy, tmp_path, f"train.init_checkpoint={tiny_checkpoint}")
    assert_one_clear_error(proc, f"cannot read image {image}", "No such file")


def test_corrupt_training_image_is_an_error_or_skipped_on_request(data_copy, tmp_path):
    image = sorted((data_copy / "train").iterdir())[2]
    image.write_bytes(b"\x00" * 100)  # not an image at all
    proc = _train(data_copy, tmp_path / "strict")
    assert_one_clear_error(proc, f"cannot read image {image}", "skip_unreadable=True")
    proc = _train(data_copy, tmp_path / "skip", "dataloader.train.mapper.skip_unreadable=True")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"skipped unreadable image {image}" in proc.stdout + proc.stderr
    assert "1 skipped so far" in proc.stdout + proc.stderr
    assert (tmp_path / "skip" / "out" / "model_final.pth").exists()


def test_annotation_json_that_does_not_parse(data_copy, tiny_checkpoint, tmp_path):
    annotations = data_copy / "annotations" / "val.json"
    text = annotations.read_text()
    annotations.write_text(text[: len(text) // 2])
    proc = _eval(data_copy, tmp_path, f"train.init_checkpoint={tiny_checkpoint}")
    assert_one_clear_error(proc, f"annotation file {annotations} is not valid JSON", "line 1, column")


def test_missing_config_file(tmp_path):
    proc = _run(["--eval-only"], str(tmp_path))
    assert_one_clear_error(proc, "pass --config-file")
    proc = _run(["--config-file", str(tmp_path / "nope.py")], str(tmp_path))
    assert_one_clear_error(proc, "nope.py does not exist")


def test_worker_errors_under_two_processes_are_one_message(data_copy, tiny_checkpoint, tmp_path):
    other = [o.replace("embed_dim=64", "embed_dim=96") for o in TINY]
    proc = _run(["--config-file", DEMO_AILURUS, "--eval-only", "--num-gpus", "2",
                 f"train.init_checkpoint={tiny_checkpoint}", f"train.output_dir={tmp_path / 'a'}"] + other,
                str(data_copy))
    assert_one_clear_error(proc, "does not fit the model")
    annotations = data_copy / "annotations" / "train.json"
    annotations.write_text("{")
    proc = _run(["--config-file", DEMO_AILURUS, "--num-gpus", "2", f"train.output_dir={tmp_path / 'b'}"] + TINY,
                str(data_copy))
    assert_one_clear_error(proc, f"annotation file {annotations} is not valid JSON")


def test_sigkill_then_resume_loses_and_repeats_no_iteration(demo_data, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    args = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", DEMO_AILURUS, "train.max_iter=40",
            "train.checkpointer.period=4", "train.log_period=1", "optimizer.lr=0.001",
            f"train.output_dir={out}"] + TINY
    env = dict(os.environ, AILURUS_DEMO_DATA=demo_data, OMP_NUM_THREADS="1")
    first = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and max([-1] + [m["iteration"] for m in _logged(out)]) < 13:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = _logged(out)
    assert max(m["iteration"] for m in killed) >= 13, "the first run never reached iteration 13"
    assert not (out / "model_final.pth").exists()
    last = (out / "last_checkpoint").read_text()
    resumed_from = int(last[len("model_"):-len(".pth")])
    assert resumed_from >= 11 and (resumed_from + 1) % 4 == 0
    proc = subprocess.run(args[:2] + ["--resume"] + args[2:], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = [m for m in _logged(out)[len(killed):] if "lr" in m]
    assert [m["iteration"] for m in after] == list(range(resumed_from + 1, 40))
    # The same learning rates as the schedule gives, and as the killed run logged for the same iterations.
    from detectron2.config import LazyConfig, instantiate

    schedule = instantiate(LazyConfig.apply_overrides(LazyConfig.load(DEMO_AILURUS), ["train.max_iter=40"]).lr_multiplier)
    lr_before = {m["iteration"]: m["lr"] for m in killed if "lr" in m}
    for m in after:
        assert m["lr"] == pytest.approx(0.001 * schedule(m["iteration"] / 40), rel=1e-6)
        if m["iteration"] in lr_before:
            assert m["lr"] == pytest.approx(lr_before[m["iteration"]], rel=1e-9)
    assert (out / "model_final.pth").exists()


def _logged(output_dir):
    """metrics.json rows so far (a run killed mid-write may leave a partial last line)."""
    path = output_dir / "metrics.json"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows
