"""The benchmark command on a tiny ViT built from the COCO config by overrides."""
import json
import os

from conftest import REPO

from ailurus import benchmark

TINY = [
    "model.backbone.net.embed_dim=64",
    "model.backbone.net.depth=4",
    "model.backbone.net.num_heads=4",
    "model.backbone.net.window_size=3",
    "model.backbone.net.window_block_indexes=[0,2]",
    "model.backbone.net.knn_k=3",
    "model.backbone.net.radius=1",
    "model.backbone.net.assign_radius=2",
]


def test_benchmark_writes_side_by_side_json(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--config-file", os.path.join(REPO, "configs/vitdet_ailurus.py"), "--size", "128", "--iters", "1",
            "--warmup", "0", "--no-e2e", "--keep-ratio", "0.25", "--cluster-layer", "2", "--json", str(out)] + TINY
    result = benchmark.main(args)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["tokens_before"] == 64 and saved["tokens_after"] == 16
    for key in ("backbone_ms_baseline", "backbone_ms_ailurus", "backbone_ms_detectron2", "cluster_ms"):
        assert saved[key] > 0
    assert saved["backbone_speedup"] == saved["backbone_ms_baseline"] / saved["backbone_ms_ailurus"]
    assert saved["flops_ratio"] == saved["gflops_baseline"] / saved["gflops_ailurus"] > 1
    assert saved["torch_threads"] >= 1
    assert saved["padding_tokens"] > 0  # the photo is not square, so the canvas has padding
