"""The benchmark command on a tiny ViT built from the COCO config by overrides."""
import json
import os
import subprocess
import sys
import time

from conftest import REPO

from ailurus.experiments import benchmark
from ailurus.experiments.views import with_settings

TINY = [
    "model.backbone.net.embed_dim=64",
    "model.backbone.net.depth=4",
    "model.backbone.net.num_heads=4",
    "model.backbone.net.window_size=3",
    "model.backbone.net.window_block_indexes=[0,2]",
    "model.backbone.net.knn_k=3",
    "model.backbone.net.radius=1",
    "model.backbone.net.assign_radius=2",
    # small heads: COCO's 512 ROIs per image would make each training step take seconds
    "model.roi_heads.batch_size_per_image=32",
    "model.proposal_generator.pre_nms_topk=[200,100]",
    "model.proposal_generator.post_nms_topk=[50,20]",
]


def test_speedup_range_pairs_the_rounds():
    # the machine slowed down in round 2; each round's own ratio (2.0, 2.5, 2.0) pairs like with like
    rounds = {(0, "backbone"): [100.0, 200.0, 120.0], (1, "backbone"): [50.0, 80.0, 60.0]}
    assert benchmark.speedup_range(rounds, (0, "backbone"), (1, "backbone")) == [2.0, 2.5]


def test_cpu_watch_counts_a_busy_process_beside_it():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)  # the interpreter starts
        watch = benchmark.CpuWatch()
        time.sleep(1.0)
        share = watch.other_share()
    finally:
        busy.kill()
        busy.wait()
    # One busy core of the machine's (another test worker may add to it).
    assert share >= min(0.25, 0.9 / (os.cpu_count() or 1))


def test_cpu_watch_subtracts_its_own_process(monkeypatch):
    """(wall s, machine busy CPU s, own CPU s): 1.5 busy seconds in 1 s on 2 cores, 1 of them ours."""
    snapshots = iter([(0.0, 10.0, 5.0), (1.0, 11.5, 6.0)])
    monkeypatch.setattr(benchmark.CpuWatch, "_snapshot", staticmethod(lambda: next(snapshots)))
    monkeypatch.setattr(benchmark.psutil, "cpu_count", lambda: 2)
    assert benchmark.CpuWatch().other_share() == 0.25


def test_benchmark_rows_json_report_and_plots(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--config-file", os.path.join(REPO, "configs/vitdet_ailurus.py"), "--size", "128", "--iters", "1",
            "--warmup", "0", "--reducers", "ailurus", "tome", "--keep-ratio", "0.25", "--cluster-layer", "2",
            "--train-step", "--json", str(out), "--report", str(tmp_path / "report")] + TINY
    # activation checkpointing: ours recomputes in the training step; the stock ViT (which would
    # need fairscale for it) is built without
    rows = benchmark.main(args + ["model.backbone.net.use_act_checkpoint=True"])
    saved = json.loads(out.read_text())["rows"]
    assert saved == json.loads(json.dumps(rows))
    assert [r["reducer"] for r in rows] == ["none", "ailurus", "tome", "detectron2"]
    base, ailurus, tome, stock = rows
    assert base["tokens_after"] == 64 and ailurus["tokens_after"] == tome["tokens_after"] == 16
    for row in (base, ailurus, tome):
        for key in ("backbone_ms", "e2e_ms", "train_step_ms", "gflops"):
            assert row[key] > 0, key
        assert row["backbone_speedup"] == base["backbone_ms"] / row["backbone_ms"]
        assert row["train_step_speedup"] == base["train_step_ms"] / row["train_step_ms"]
        assert row["backbone_speedup_range"] == [row["backbone_speedup"]] * 2  # one round: its own ratio
        assert row["throughput"] == 1e3 / row["e2e_ms"]
        assert row["threads"] >= 1 and row["device"] == "cpu" and row["size"] == 128 and row["batch"] == 1
        assert 0 <= row["other_cpu_share"] <= 1 and row["other_cpu_share"] == base["other_cpu_share"]
    assert ailurus["flops_ratio"] == base["gflops"] / ailurus["gflops"] > 1 and tome["flops_ratio"] > 1
    assert ailurus["reduce_ms"] > 0 and base["reduce_ms"] is None
    assert stock["backbone_ms"] > 0 and "e2e_ms" not in stock
    assert "| ViT-64 | 128 | 1 | tome | 0.25 | 2 | 16 |" in (tmp_path / "report" / "benchmark.md").read_text()
    for png in ("speedup_vs_flops.png", "speedup_vs_size.png"):
        assert (tmp_path / "report" / png).stat().st_size > 0


def test_benchmark_onnxruntime_timing_and_memory_per_process_without_profiler_errors(capfd):
    args = ["--config-file", os.path.join(REPO, "configs/vitdet_ailurus.py"), "--size", "128", "--iters", "1",
            "--warmup", "0", "--no-e2e", "--no-detectron2", "--keep-ratio", "0.25", "--cluster-layer", "2",
            "--onnxruntime", "--memory", "--train-step"] + TINY
    base, ailurus = benchmark.main(args)
    for row in (base, ailurus):
        assert row["onnxruntime_backbone_ms"] > 0
        assert row["onnxruntime_backbone_speedup"] == base["onnxruntime_backbone_ms"] / row["onnxruntime_backbone_ms"]
        assert row["peak_mem_mb"] > 0 and row["peak_train_mem_mb"] > row["peak_mem_mb"]  # measured in its own process
    captured = capfd.readouterr()
    assert "ERROR" not in captured.out + captured.err and "gpuGetDeviceCount" not in captured.out + captured.err


def test_own_aspect_canvas_is_not_padded_to_a_square():
    # rocket is 427 x 640: 85 x 128 at 128 px, padded to the 32 px stride (96 x 128: 6 x 8 tokens)
    # instead of to a 128 x 128 square (8 x 8)
    args = ["--config-file", os.path.join(REPO, "configs/vitdet_ailurus.py"), "--size", "128", "--iters", "1",
            "--warmup", "0", "--no-e2e", "--no-detectron2", "--image", "rocket", "--keep-ratio", "0.5",
            "--cluster-layer", "2"] + TINY
    square = benchmark.main(args)
    own = benchmark.main(args + ["--own-aspect"])
    assert [r["canvas"] for r in square] == [[128, 128]] * 2 and [r["canvas"] for r in own] == [[96, 128]] * 2
    assert [r["tokens_before"] for r in own] == [48, 48] and [r["tokens_after"] for r in own] == [48, 24]
    assert [r["tokens_after"] for r in square] == [64, 32]
    assert own[0]["gflops"] < square[0]["gflops"]


def test_compiled_timing_needs_a_warm_up_round():
    import pytest

    with pytest.raises(SystemExit):
        benchmark.parse_args(["--config-file", "c.py", "--compile", "--warmup", "0"])
    assert benchmark.parse_args(["--config-file", "c.py", "--compile"]).compile


def test_with_settings_shares_weights_and_checks_values():
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.apply_overrides(LazyConfig.load(os.path.join(REPO, "configs/vitdet_ailurus.py")), TINY)
    model = instantiate(cfg.model)
    view = with_settings(model, reducer="pool", keep_ratio=0.3)
    assert view.backbone.net.reducer == "pool" and model.backbone.net.reducer == "ailurus"
    assert view.backbone.net.blocks[0].attn.qkv.weight is model.backbone.net.blocks[0].attn.qkv.weight
    assert view.roi_heads is model.roi_heads
    import pytest

    with pytest.raises(ValueError, match="keep_ratio=1.5"):
        with_settings(model, keep_ratio=1.5)
