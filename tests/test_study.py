"""A 2-iteration smoke run of the accuracy study on a tiny subset and a tiny model."""
import json
import statistics

from test_train_net import demo_data  # noqa: F401  fixture

TINY_STUDY = [
    "model.backbone.net.embed_dim=64", "model.backbone.net.num_heads=2", "model.backbone.net.depth=3",
    "model.backbone.net.window_block_indexes=[0]", "model.backbone.net.freeze_blocks=0",
    "model.backbone.net.cluster_layer=1", "train.init_checkpoint=", "train.max_iter=2",
    "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
    "model.roi_heads.batch_size_per_image=32", "model.proposal_generator.post_nms_topk=[50,20]",
]


def test_study_smoke_run_writes_reports_and_resumes(demo_data, tmp_path, monkeypatch):  # noqa: F811
    from ailurus.experiments import runner, study

    evaluate = study.evaluate

    monkeypatch.setenv("AILURUS_DEMO_DATA", demo_data)
    args = ["--datasets", "demo", "--seeds", "0", "--keeps", "0.5", "--unfolds", "residual", "--speed-iters", "1",
            "--work-dir", str(tmp_path / "work"), "--reports", str(tmp_path / "reports"), "--layers", "1", "2",
            "--reducers", "ailurus", "pool", "--adaptive-keeps", "0.5",
            "--variants", "confined:model.backbone.net.confine_windows=True"]
    (tmp_path / "reports").mkdir()
    other = {"dataset": "nuclei", "seed": 0, "reducer": "none", "box_ap": 1.0, "mask_ap": 2.0}
    (tmp_path / "reports" / "accuracy.json").write_text(json.dumps({"rows": [other]}))
    rows = study.main(args + TINY_STUDY)  # overrides right after a list option
    kinds = [(r["reducer"], r["cluster_layer"], r["fine_tuned"]) for r in rows]
    # peers at the config's cluster layer only (--peer-layers), then the adaptive budget, then the fine-tune
    # evaluated with AiluRus on and off
    assert kinds == [("none", None, False), ("ailurus", 1, False), ("ailurus", 2, False), ("pool", 1, False),
                     ("ailurus", 1, False), ("ailurus", 1, False), ("ailurus", 1, True), ("none", None, True)]
    assert rows[6]["trained_keep_ratio"] == rows[7]["trained_keep_ratio"] == 0.35 and rows[7]["tokens_after"] == 256
    assert rows[4]["variant"] == "confined" and rows[4]["tokens_after"] == 128
    adaptive = rows[5]
    assert adaptive["budget"] == "adaptive" and [r["budget"] for r in rows[:5]] == ["fixed"] * 5
    # calibrated to the fixed budget's mean token count on the val images it was measured on
    assert adaptive["fixed_tokens"] == 128 and abs(statistics.mean(adaptive["tokens_per_image"]) - 128) <= 1
    assert len(adaptive["edge_density"]) == len(adaptive["tokens_per_image"])
    assert adaptive["adaptive_batch2_ms_per_image"] > 0 and adaptive["adaptive_batch2_grouped_ms_per_image"] > 0
    # its latency study is cached once per backbone (by the hash of its weights), not per seed
    assert len(list((tmp_path / "work" / "demo" / "adaptive_latency").glob("adaptive_keep0.5_L1_*.json"))) == 1
    assert (tmp_path / "reports" / "budget_tokens.png").stat().st_size > 0
    for row in rows:
        assert {"dataset", "seed", "reducer", "keep_ratio", "image_keep_ratio", "cluster_layer", "unfold",
                "fine_tuned", "box_ap", "mask_ap", "tokens_after", "backbone_speedup", "e2e_speedup",
                "padding_share", "canvas"} <= row.keys()
        assert 0 < row["image_keep_ratio"] <= 1 and row["backbone_speedup"] > 0
        # demo val scenes are 192-256 x 256 on the 256 px square canvas
        assert row["canvas"] == [256, 256] and 0 <= row["padding_share"] < 0.3
    assert rows[0]["tokens_after"] == 256 and rows[1]["tokens_after"] == 128
    assert rows[3]["tokens_after"] == 11 * 11 and rows[3]["unfold"] == "residual"  # round(16 * sqrt(0.5)) cells a side
    assert "train_time_ratio" in rows[6]  # None: 2 iterations are untimed
    # The fine-tune's inference speed is its setting's (measured here: keep 0.35 is not in --keeps);
    # with AiluRus off it runs the baseline.
    assert rows[6]["e2e_speedup"] > 0 and (rows[7]["backbone_speedup"], rows[7]["e2e_speedup"]) == (1.0, 1.0)
    assert (tmp_path / "work" / "demo" / "speed" / "keep0.35_L1.json").is_file()
    # and its training step against AiluRus off, side by side, at the training batch
    step = json.loads((tmp_path / "work" / "demo" / "speed" / "train_keep0.35_L1.json").read_text())
    assert rows[6]["train_step_speedup"] == step["train_step_speedup"] > 0
    assert step["train_step_speedup"] == step["baseline_train_step_ms"] / step["train_step_ms"]
    saved = json.loads((tmp_path / "reports" / "accuracy.json").read_text())["rows"]
    assert saved == [other] + json.loads(json.dumps(rows))  # rows of datasets not studied are kept
    assert "mask AP change" in (tmp_path / "reports" / "accuracy.md").read_text()
    assert (tmp_path / "reports" / "accuracy.png").stat().st_size > 0
    # Every stage is cached: a rerun trains and evaluates nothing and gives the same rows.
    monkeypatch.setattr(study, "evaluate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-evaluated")))
    monkeypatch.setattr(runner.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-trained")))
    assert study.main(args + TINY_STUDY) == rows
    # --merge replaces only the rows a run produces: a rerun of two settings keeps the others.
    subset = args[:args.index("--layers")] + ["--layers", "2", "--finetune-keeps", "--merge"]
    assert [(r["reducer"], r["cluster_layer"]) for r in study.main(subset + TINY_STUDY)] == [("none", None), ("ailurus", 2)]
    merged = json.loads((tmp_path / "reports" / "accuracy.json").read_text())["rows"]
    assert sorted(map(json.dumps, merged)) == sorted(map(json.dumps, saved))
    assert study.main(args + TINY_STUDY) == rows  # without --merge the run's rows replace the dataset's
    # A dataset evaluated with another's weights (nuclei_full_1024) reuses its training runs.
    monkeypatch.setitem(study.STUDY_CONFIGS, "demo_again", study.STUDY_CONFIGS["demo"])
    monkeypatch.setitem(study.WEIGHTS_FROM, "demo_again", "demo")
    monkeypatch.setattr(study, "evaluate", evaluate)
    again = study.main(["--datasets", "demo_again", "--seeds", "0", "--keeps", "0.5", "--unfolds", "residual",
                        "--layers", "1", "--speed-iters", "1", "--work-dir", str(tmp_path / "work"),
                        "--reports", str(tmp_path / "reports")] + TINY_STUDY)
    assert [(r["dataset"], r["fine_tuned"]) for r in again] == [("demo_again", False)] * 2 + [("demo_again", True)] * 2
    for new, old in zip(again, [rows[0], rows[1], rows[6], rows[7]]):  # same weights, same val set: same AP
        assert (new["box_ap"], new["mask_ap"]) == (old["box_ap"], old["mask_ap"])
    assert (tmp_path / "work" / "demo_again" / "seed0" / "finetuned_keep0.35" / "eval.json").is_file()


def test_markdown_compares_with_the_baseline_not_with_the_tuned_model_run_without_ailurus():
    from ailurus.experiments import study

    common = dict(dataset="d", seed=0, keep_ratio=1.0, cluster_layer=None, unfold=None, image_keep_ratio=1.0)
    rows = [{**common, "reducer": "none", "fine_tuned": False, "box_ap": 40.0, "mask_ap": 50.0},
            {**common, "reducer": "none", "fine_tuned": True, "trained_keep_ratio": 0.35, "box_ap": 45.0, "mask_ap": 60.0},
            {**common, "reducer": "ailurus", "fine_tuned": True, "trained_keep_ratio": 0.35, "keep_ratio": 0.35,
             "cluster_layer": 3, "unfold": "residual", "box_ap": 39.0, "mask_ap": 49.0, "train_step_speedup": 1.4},
            {**common, "reducer": "none", "fine_tuned": True, "trained_keep_ratio": 0.5, "box_ap": 41.0, "mask_ap": 52.0}]
    table = study.markdown(rows).splitlines()[2:]
    assert len(table) == 3  # the two fine-tunes run without AiluRus are told apart by their training keep ratio
    assert "| True | ailurus | 0.35 |" in table[0] and "| -1.00 (one seed) | -1.00 (one seed) |" in table[0]
    assert table[0].endswith("| 1.40x | 1 |")
    assert "| True | none (trained at keep 0.35) | 1.0 |" in table[1] and "| +5.00 (one seed) | +10.00 (one seed) |" in table[1]
    assert "| True | none (trained at keep 0.5) | 1.0 |" in table[2] and "| +1.00 (one seed) | +2.00 (one seed) |" in table[2]


def test_markdown_marks_speed_ups_timed_while_the_cpu_was_busy():
    from ailurus.experiments import study

    common = dict(dataset="d", seed=0, fine_tuned=False, unfold="residual", image_keep_ratio=0.5, box_ap=1.0,
                  mask_ap=1.0, backbone_speedup=1.5, e2e_speedup=1.2)
    rows = [{**common, "reducer": "none", "keep_ratio": 1.0, "cluster_layer": None, "unfold": None},
            {**common, "reducer": "ailurus", "keep_ratio": 0.5, "cluster_layer": 3, "other_cpu_share": 0.4},
            {**common, "reducer": "ailurus", "keep_ratio": 0.35, "cluster_layer": 3, "other_cpu_share": 0.02,
             "train_step_speedup": 1.3, "train_other_cpu_share": 0.5},
            {**common, "reducer": "ailurus", "keep_ratio": 0.25, "cluster_layer": 3}]  # timed before it was recorded
    table = study.markdown(rows).splitlines()[2:]  # by keep: 0.25, 0.35, 0.5
    assert [("| 1.50x (contended) | 1.20x (contended) |" in line) for line in table] == [False, False, True]
    assert all("| 1.50x | 1.20x |" in line for line in table[:2])
    assert "| 1.50x | 1.20x | 1.30x (contended) |" in table[1]  # the training step was timed on a busy CPU


def test_training_of_a_dataset_in_init_from_starts_from_that_datasets_baseline_of_the_same_seed(tmp_path,
                                                                                                  monkeypatch):
    import argparse
    import os

    from ailurus.experiments import study

    calls = []

    def train_seed(config, output_dir, seed, opts):
        calls.append((config, output_dir, seed, list(opts)))
        return os.path.join(output_dir, "model_final.pth")

    monkeypatch.setattr(study, "train_seed", train_seed)
    args = argparse.Namespace(opts=["train.max_iter=7"], work_dir=str(tmp_path), reducers=["ailurus"], keeps=[0.5],
                              layers=[3], peer_layers=None, unfolds=["residual"], variants=[],
                              variant_layers=None)
    work = str(tmp_path)
    for dataset in ("nuclei_512", "nuclei_512_at1024"):  # the second evaluates the first's weights
        calls.clear()
        run = study.DatasetRun.plan(args, dataset)
        weights = run.train("finetuned_keep0.35", 2, ["model.backbone.net.enabled=True"])
        start = os.path.join(work, "nuclei", "seed2", "baseline", "model_final.pth")
        assert calls == [
            (study.STUDY_CONFIGS["nuclei"], os.path.dirname(start), 2, ["train.max_iter=7", "model.backbone.net.enabled=False"]),
            (study.STUDY_CONFIGS["nuclei_512"], os.path.join(work, "nuclei_512", "seed2", "finetuned_keep0.35"), 2,
             ["model.backbone.net.enabled=True", f"train.init_checkpoint={start}"])]
        assert weights == os.path.join(work, "nuclei_512", "seed2", "finetuned_keep0.35", "model_final.pth")
    calls.clear()
    study.DatasetRun.plan(args, "nuclei").train("baseline", 0, [])  # not in INIT_FROM: the config's own start
    assert calls == [(study.STUDY_CONFIGS["nuclei"], os.path.join(work, "nuclei", "seed0", "baseline"), 0, [])]


def test_speed_times_each_config_on_its_own_canvas(monkeypatch):
    """Square-padded configs on the benchmark's photo at their square; configs without square
    padding on their first val image on a canvas of its own aspect (the filled 512 x 1024 canvas, not
    a 1024 square)."""
    from ailurus.experiments import study

    seen = []

    def fake_run(args):
        seen.append(args)
        return [{}, {"backbone_speedup": 2.0, "e2e_speedup": 1.5, "flops_ratio": 2.5, "reduce_ms": 1.0,
                     "backbone_ms": 4.0, "other_cpu_share": 0.3}]

    asked = []

    def fake_dataset(name):  # the nuclei set is built by `make nuclei-data`, absent from a clean clone
        asked.append(name)
        return [{"file_name": f"datasets/{name}/val_0.png"}, {"file_name": f"datasets/{name}/val_1.png"}]

    from detectron2.data import DatasetCatalog

    monkeypatch.setattr(study.benchmark, "run", fake_run)
    monkeypatch.setattr(DatasetCatalog, "get", fake_dataset)
    row = study.speed(study.STUDY_CONFIGS["nuclei_1024_filled"], "w.pth", "ailurus", 0.5, 3, 1, [])
    assert row == {"backbone_speedup": 2.0, "e2e_speedup": 1.5, "flops_ratio": 2.5, "cluster_share": 0.25,
                   "other_cpu_share": 0.3}
    study.speed(study.STUDY_CONFIGS["demo"], "w.pth", "ailurus", 0.5, 3, 1, [])
    filled, demo = seen
    assert filled.own_aspect and filled.sizes == [1024] and "nuclei" in asked[0] and asked[1:] == []
    assert filled.image == f"datasets/{asked[0]}/val_0.png"
    assert not demo.own_aspect and demo.sizes == [256] and demo.image == "coffee"


def test_the_soft_residual_unfold_is_timed_apart_from_the_hard_unfolds(tmp_path, monkeypatch):
    """The hard unfolds cost the same (one timing per setting); the soft residual's similarity
    search does not, so it is timed with that unfold, under its own key."""
    import argparse

    from ailurus.experiments import study

    timed = []

    def fake_speed(config, weights, reducer, keep, layer, iters, opts, train_step=False):
        timed.append(list(opts))
        return {"backbone_speedup": float(len(timed))}

    monkeypatch.setattr(study, "speed", fake_speed)
    args = argparse.Namespace(opts=[], work_dir=str(tmp_path), reducers=["ailurus"], keeps=[0.5], layers=[3],
                              peer_layers=None, unfolds=["residual"], variants=[], variant_layers=None, speed_iters=1)
    run = study.DatasetRun.plan(args, "demo")
    hard = [run.timing(args, "w.pth", "ailurus", 0.5, 3, unfold=u) for u in ("residual", "copy", "residual")]
    soft = [run.timing(args, "w.pth", "ailurus", 0.5, 3, unfold="soft_residual") for _ in range(2)]
    assert hard == [{"backbone_speedup": 1.0}] * 3 and soft == [{"backbone_speedup": 2.0}] * 2
    assert len(timed) == 2 and not any("unfold" in o for o in timed[0])
    assert timed[1][-1] == "model.backbone.net.unfold=soft_residual"
    # A timing is reused only under the AiluRus settings it was made under.
    args.opts = ["model.backbone.net.span_windows=False"]
    run = study.DatasetRun.plan(args, "demo")
    assert run.timing(args, "w.pth", "ailurus", 0.5, 3) == {"backbone_speedup": 3.0}
    assert run.timing(args, "w.pth", "ailurus", 0.5, 3) == {"backbone_speedup": 3.0} and len(timed) == 3


def test_variants_run_at_each_variant_layer_and_peers_at_theirs():
    import argparse

    from ailurus.experiments.study import study_settings

    args = argparse.Namespace(reducers=["ailurus", "tome"], keeps=[0.5], layers=[2, 3], peer_layers=None,
                              unfolds=["residual"], variants=[("pos", ["model.backbone.net.position_weight=0.1"])],
                              variant_layers=None)
    plain = [("ailurus", 0.5, 2, "residual", "", []), ("ailurus", 0.5, 3, "residual", "", []),
             ("tome", 0.5, 3, "residual", "", [])]
    variant = ("ailurus", 0.5, 3, "residual", "pos", ["model.backbone.net.position_weight=0.1"])
    assert study_settings(args, config_layer=3) == plain + [variant]
    args.variant_layers = [2, 4]
    assert study_settings(args, config_layer=3) == plain + [variant[:2] + (2,) + variant[3:],
                                                            variant[:2] + (4,) + variant[3:]]


def test_a_cached_result_is_reused_only_under_the_settings_it_was_made_under(tmp_path):
    from ailurus.experiments.runner import SETTINGS_KEY, cached

    calls = []

    def compute():
        calls.append(1)
        return {"ap": float(len(calls))}

    path, now = str(tmp_path / "eval.json"), {"span_windows": True, "keep_ratio": 0.5}
    assert cached(path, compute, now) == cached(path, compute, now) == {"ap": 1.0} and len(calls) == 1
    assert cached(path, compute, {**now, "keep_ratio": 0.4}) == {"ap": 2.0}  # another setting: computed again
    assert cached(path, compute) == {"ap": 2.0}  # no settings given: what is stored
    # A result stored without a record was made when span_windows did not exist (False).
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"ap": 7.0}))
    assert cached(str(old), compute, {**now, "span_windows": False}) == {"ap": 7.0}
    assert cached(str(old), compute, now) == {"ap": 3.0}  # a changed default does not reuse it
    assert json.loads(old.read_text())[SETTINGS_KEY] == now
