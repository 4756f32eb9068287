"""train_net.py as users run it: eval-only, overrides, resume, two processes, clear errors."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO

DEMO_AILURUS = os.path.join(REPO, "configs", "demo", "vitdet_demo_ailurus.py")
TINY = [
    "model.backbone.net.embed_dim=64",
    "model.backbone.net.num_heads=2",
    "model.backbone.net.depth=3",
    "model.backbone.net.window_block_indexes=[0]",
    "model.backbone.net.cluster_layer=1",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from ailurus.data import demo

    root = str(tmp_path_factory.mktemp("demo_data"))
    demo.build(root, num_train=8, num_val=4, seed=1)
    return root


def _run(args, data_root, env_extra=None, timeout=300):
    env = dict(os.environ, AILURUS_DEMO_DATA=data_root, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, os.path.join(REPO, "train_net.py")] + args, capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=timeout)


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_missing_coco_gives_one_clear_message(tmp_path):
    proc = _run(["--config-file", os.path.join(REPO, "configs/vitdet_ailurus.py"), "--eval-only"], str(tmp_path),
                env_extra={"DETECTRON2_DATASETS": str(tmp_path / "nowhere")})
    assert proc.returncode != 0
    assert str(tmp_path / "nowhere" / "coco") in proc.stderr
    assert "DETECTRON2_DATASETS" in proc.stderr and "expected layout" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_override_key_is_a_clear_error(demo_data):
    proc = _run(["--config-file", DEMO_AILURUS, "--eval-only", "model.backbone.net.keep_ratoi=0.3"], demo_data)
    assert proc.returncode == 2
    assert "has no key 'model.backbone.net.keep_ratoi'" in proc.stderr
    assert "model.backbone.net.keep_ratio" in proc.stderr  # the suggestion
    assert "Traceback" not in proc.stderr


def test_override_reaches_the_model(demo_data, monkeypatch):
    monkeypatch.setenv("AILURUS_DEMO_DATA", demo_data)
    sys.path.insert(0, REPO)
    import train_net
    from detectron2.config import instantiate
    from detectron2.engine import default_argument_parser

    args = default_argument_parser().parse_args(
        ["--config-file", DEMO_AILURUS, "model.backbone.net.keep_ratio=0.3", "model.backbone.net.enabled=False"] + TINY
    )
    model = instantiate(train_net.load_config(args).model)
    assert model.backbone.net.keep_ratio == 0.3 and model.backbone.net.enabled is False
    assert len(model.backbone.net.blocks) == 3


@pytest.fixture
def tiny_checkpoint(demo_data, tmp_path, monkeypatch):
    """A checkpoint of the demo AiluRus model with the TINY overrides."""
    monkeypatch.setenv("AILURUS_DEMO_DATA", demo_data)
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.apply_overrides(LazyConfig.load(DEMO_AILURUS), TINY)
    torch.manual_seed(0)
    DetectionCheckpointer(instantiate(cfg.model), save_dir=str(tmp_path)).save("tiny")
    return tmp_path / "tiny.pth"


def _eval_only(checkpoint, overrides, data_root, tmp_path):
    return _run(["--config-file", DEMO_AILURUS, "--eval-only", f"train.init_checkpoint={checkpoint}",
                 f"train.output_dir={tmp_path / 'eval'}"] + overrides, data_root)


def test_eval_only_with_a_tiny_checkpoint(demo_data, tiny_checkpoint, tmp_path):
    proc = _eval_only(tiny_checkpoint, TINY, demo_data, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "Evaluation results for bbox" in log and "Evaluation results for segm" in log
    assert "Total inference time" in log and "s / iter per device" in log


@pytest.mark.parametrize(
    "change, message",
    [(("embed_dim=64", "embed_dim=96"), "in the checkpoint vs"), (("depth=3", "depth=2"), "not in the model")],
    ids=["reshaped", "extra-blocks"],
)
def test_eval_only_refuses_a_checkpoint_of_another_model(demo_data, tiny_checkpoint, tmp_path, change, message):
    other = [o.replace(*change) for o in TINY]
    proc = _eval_only(tiny_checkpoint, other, demo_data, tmp_path)
    assert proc.returncode == 2
    assert "does not fit the model" in proc.stderr and message in proc.stderr
    assert "Evaluation results" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_resume_continues_at_the_next_iteration_with_the_same_lr(demo_data, tmp_path):
    common = ["--config-file", DEMO_AILURUS, "train.max_iter=6", "train.checkpointer.period=2",
              "train.log_period=1", "optimizer.lr=0.001"] + TINY
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    proc = _run(common + [f"train.output_dir={full}"], demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Interrupted after iteration 3: only its checkpoint survives.
    resumed.mkdir()
    shutil.copy(full / "model_0000003.pth", resumed / "model_0000003.pth")
    (resumed / "last_checkpoint").write_text("model_0000003.pth")
    proc = _run(["--resume"] + common + [f"train.output_dir={resumed}"], demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = {m["iteration"]: m for m in _metrics(full) if "lr" in m}
    after = {m["iteration"]: m for m in _metrics(resumed) if "lr" in m}
    assert sorted(after) == [4, 5]
    for it in (4, 5):
        assert after[it]["lr"] == pytest.approx(before[it]["lr"], rel=1e-9)
    assert before[4]["lr"] != before[5]["lr"]  # the schedule really moves
    assert (resumed / "model_final.pth").exists()


def test_two_processes_on_cpu_with_gloo(demo_data, tmp_path):
    out = tmp_path / "ddp"
    proc = _run(["--config-file", DEMO_AILURUS, "--num-gpus", "2", "train.max_iter=2", "train.log_period=1",
                 f"train.output_dir={out}"] + TINY, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "World size: 2" in log
    assert [m["iteration"] for m in _metrics(out) if "total_loss" in m] == [0, 1]
    assert (out / "model_final.pth").exists()


def test_eval_only_without_weights_is_an_error(demo_data):
    proc = _run(["--config-file", DEMO_AILURUS, "--eval-only"] + TINY, demo_data)
    assert proc.returncode == 2 and "needs weights" in proc.stderr and "Traceback" not in proc.stderr


def test_training_without_an_evaluator_skips_the_final_evaluation(demo_data, tmp_path):
    out = tmp_path / "no_eval"
    proc = _run(["--config-file", DEMO_AILURUS, "train.max_iter=2", f"train.output_dir={out}",
                 "dataloader.evaluator=null"] + TINY, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model_final.pth").exists()
    log = (out / "log.txt").read_text() + proc.stdout + proc.stderr
    assert "Starting training" in log and "Start inference" not in log and "Evaluation results" not in log
    proc = _run(["--config-file", DEMO_AILURUS, "--eval-only", f"train.init_checkpoint={out / 'model_final.pth'}",
                 "dataloader.evaluator=null"] + TINY, demo_data)
    assert proc.returncode == 2 and "needs an evaluator" in proc.stderr and "Traceback" not in proc.stderr
