# Every target depends on the stamp, so a fresh clone needs nothing but `make <target>`.
PY        := .venv/bin/python
STAMP     := .venv/.installed
CONFIG    ?=
DATA      ?=
OUT       ?=
TEST_ARGS ?=

RUN_ARGS = $(if $(DATA),--data $(DATA)) $(if $(OUT),--out $(OUT))

.PHONY: install test lint demo pretrain-sl pretrain-slmlp pretrain-look pretrain-all export bench-coco bench-voc-det bench-voc bench-ade bench-cls bench-probe bench-reference probe-seeds bench-proxy data-fmnist bench-dryrun tables bench-pretrain-speed bench-data-speed gpu-check clean-runs

install: $(STAMP)

$(STAMP): scripts/install.sh requirements.txt pyproject.toml
	bash scripts/install.sh
	touch $@

test: $(STAMP)
	$(PY) -m pytest $(TEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check pretrain transfer benchmarks tests

pretrain-sl: $(STAMP)
	$(PY) -m pretrain train --config $(or $(CONFIG),pretrain/configs/sl_cpu.yaml) $(RUN_ARGS)

pretrain-slmlp: $(STAMP)
	$(PY) -m pretrain train --config $(or $(CONFIG),pretrain/configs/slmlp_cpu.yaml) $(RUN_ARGS)

pretrain-look: $(STAMP)
	$(PY) -m pretrain train --config $(or $(CONFIG),pretrain/configs/look_cpu.yaml) $(RUN_ARGS)

pretrain-all: pretrain-sl pretrain-slmlp pretrain-look

# The main job on the embedded data: pretrain SL, SL-MLP and LOOK (pretrain/configs/*_cpu.yaml); then, for
# each backbone, every benchmark its declaration puts in the demo (`python -m benchmarks list --demo`:
# Mask R-CNN in Detectron2 and MMDetection, Faster R-CNN C4 on VOC07+12 in Detectron2, FCN on VOC and
# UPerNet on ADE20K in MMSegmentation, each converting and verifying the backbone first, and the
# frozen-feature probe), one seed each; then their tables in runs/demo/tables/ (results/ is left alone) and a
# table of where the time went (runs/demo/times.md, one log per step beside it). Smoke numbers show the
# pipeline works; they are not benchmark results.
demo: $(STAMP)
	$(PY) -m benchmarks demo

# Convert a pretrained backbone for Detectron2 / MMDetection / MMSegmentation and verify it: make export CKPT=...
TO ?= all
export: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make export CKPT=path/to/checkpoint [TO=all|detectron2|mmdet|mmseg] [OUT=dir]"; exit 2; }
	$(PY) -m transfer export $(CKPT) --to $(TO) --out $(or $(OUT),runs/transfer) --verify

# Does this install reproduce the literature? The released checkpoints of a task's published references, with
# the published number of trials, measured against the published values: make bench-reference [TASK=voc-det]
# [GPUS=8] DATA=... (results/reference_<task>.md); SCHEDULE=smoke runs the pipeline offline on the embedded data.
# FRAMEWORK only when given on the command line, SCHEDULE when given (the defaults: every published reference).
TASK ?= voc-det
bench-reference: $(STAMP)
	$(PY) -m benchmarks reference --task $(TASK) $(if $(filter command line,$(origin FRAMEWORK)),--framework $(FRAMEWORK)) \
	  $(if $(SCHEDULE),--schedule $(SCHEDULE)) $(if $(DATA),--data $(DATA)) \
	  --procs $(GPUS) --device $(DEVICE) $(if $(TRIALS),--trials $(TRIALS)) \
	  --command-line "make bench-reference TASK=$(TASK)$(if $(SCHEDULE), SCHEDULE=$(SCHEDULE))$(if $(DATA), DATA=$(DATA)) GPUS=$(GPUS)"

# Fine-tune and evaluate on COCO: make bench-coco CKPT=... [DATA=coco/] [FRAMEWORK=detectron2|mmdet] [GPUS=8]
# The schedule follows the data: with DATA, the benchmark's real protocol (its published reference's: COCO 1x,
# VOC07+12 24k, VOC 1x; ADE20K 1x); without, the smoke schedule on the embedded data. SCHEDULE=smoke|1x|2x|24k
# names another. GPUS=N trains in N processes (one per GPU; with DEVICE=cpu, CPU processes over gloo); the
# protocol's global batch, lr and length stay the same. OPTS="KEY=VALUE ..." go to the framework's own override
# mechanism and make another run (directory and table row). PLAN=1 prints what would run and runs nothing.
# SEED=N runs that one seed; SEEDS=N runs seeds 0..N-1 (default: the benchmark's, 5 for bench-voc-det, else 1).
FRAMEWORK ?= detectron2
SCHEDULE  ?=
SEED      ?= 0
GPUS      ?= 1
DEVICE    ?= auto
PLAN      ?=
BENCH_SEEDS = $(if $(filter command line,$(origin SEEDS)),--seeds $(SEEDS),$(if $(filter command line,$(origin SEED)),--seed $(SEED)))
BENCH_RUN_ARGS = $(if $(SCHEDULE),--schedule $(SCHEDULE)) $(BENCH_SEEDS) --procs $(GPUS) --device $(DEVICE) \
  $(if $(DATA),--data $(DATA)) $(if $(OPTS),--opts $(OPTS)) $(if $(PLAN),--plan)
bench-coco: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make bench-coco CKPT=path [DATA=dir] [FRAMEWORK=detectron2|mmdet] [SCHEDULE=1x|2x|smoke] [GPUS=8] [PLAN=1]"; exit 2; }
	$(PY) -m benchmarks run coco --ckpt $(CKPT) --framework $(FRAMEWORK) $(BENCH_RUN_ARGS)

# PASCAL VOC07+12 detection, Faster R-CNN R50-C4 in Detectron2, 5 seeds unless SEEDS/SEED says otherwise:
# make bench-voc-det CKPT=... [DATA=VOCdevkit] [SCHEDULE=24k|smoke] [SEEDS=5] [GPUS=8]
bench-voc-det: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make bench-voc-det CKPT=path [DATA=VOCdevkit] [SCHEDULE=24k|smoke] [SEEDS=5] [GPUS=8] [PLAN=1]"; exit 2; }
	$(PY) -m benchmarks run voc-det --ckpt $(CKPT) --framework detectron2 $(BENCH_RUN_ARGS)

# Semantic segmentation in MMSegmentation: make bench-voc CKPT=... [DATA=VOCdevkit/VOC2012] [SCHEDULE=1x|2x|smoke]
bench-voc: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make bench-voc CKPT=path [DATA=VOCdevkit/VOC2012] [SCHEDULE=1x|2x|smoke] [GPUS=4] [PLAN=1]"; exit 2; }
	$(PY) -m benchmarks run voc --ckpt $(CKPT) --framework mmseg $(BENCH_RUN_ARGS)

bench-ade: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make bench-ade CKPT=path [DATA=ADEChallengeData2016] [SCHEDULE=1x|2x|smoke] [GPUS=4] [PLAN=1]"; exit 2; }
	$(PY) -m benchmarks run ade20k --ckpt $(CKPT) --framework mmseg $(BENCH_RUN_ARGS)

# Classification transfer, the many-shot linear protocol on frozen features: every dataset found under DATA (the
# folder torchvision's dataset classes take as root; docs/benchmarks.md#classification-transfer-cls-linear), or
# DATASETS=cifar10,dtd,...: make bench-cls CKPT=... [DATA=root] [DATASETS=...] [IMAGE_SIZE=N] [TRAIN_PER_CLASS=N];
# without DATA, the smoke schedule. IMAGE_SIZE replaces the protocol's 224 px, for backbones trained at another
# size; TRAIN_PER_CLASS keeps the first N training images of each class (a reduced size; the run records both).
CLS_OPTS = $(if $(DATASETS),datasets=$(DATASETS)) $(if $(IMAGE_SIZE),image_size=$(IMAGE_SIZE)) \
  $(if $(TRAIN_PER_CLASS),train_per_class=$(TRAIN_PER_CLASS))
bench-cls: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make bench-cls CKPT=path [DATA=root] [DATASETS=name,name] [IMAGE_SIZE=N] [TRAIN_PER_CLASS=N] [PLAN=1]"; exit 2; }
	$(PY) -m benchmarks run cls-linear --ckpt $(CKPT) --framework frozen $(if $(SCHEDULE),--schedule $(SCHEDULE)) \
	  --device $(DEVICE) $(if $(DATA),--data $(DATA)) $(if $(strip $(CLS_OPTS)),--opts $(strip $(CLS_OPTS))) $(if $(PLAN),--plan)

# Frozen-feature probe of a backbone on an ImageFolder train/val pair (default: the embedded data by
# sub-mode, i.e. coarse-to-fine): make bench-probe CKPT=... [DATA=dir with train/ val/ [coarse_map.csv]]
bench-probe: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make bench-probe CKPT=path [DATA=dir with train/ and val/]"; exit 2; }
	$(PY) -m benchmarks run probe --framework frozen --schedule standard --ckpt $(CKPT) --seed $(SEED) \
	  $(if $(DATA),--data $(DATA))

# The proxy-transfer report: pretrain every method with each seed on the embedded data, probe each
# backbone (coarse-to-fine), then the tables (results/probe.md has the by-method mean ± std).
# PRETRAIN_SET="key=value ..." adds pretraining overrides.
SEEDS ?= 0 1 2
PRETRAIN_SET ?=
probe-seeds: $(STAMP)
	@mkdir -p runs/pretrain; for seed in $(SEEDS); do for run in sl slmlp look; do \
	  out=runs/pretrain/$${run}_cpu$$( [ $$seed = 0 ] || echo _seed$$seed ); \
	  $(PY) -m pretrain train --config pretrain/configs/$${run}_cpu.yaml $(foreach s,$(PRETRAIN_SET),--set $(s)) \
	    $$( [ $$seed = 0 ] || echo --set train.seed=$$seed --out $$out ) > $$out.log 2>&1 || { tail -5 $$out.log; exit 1; }; \
	  $(PY) -m benchmarks run probe --framework frozen --schedule standard --ckpt $$(ls -t $$out/export/*.pth | head -1) \
	    > $$out.probe.log 2>&1 || { tail -5 $$out.probe.log; exit 1; }; \
	  grep -E "^(probe|diagnostics):" $$out.probe.log | sed "s|^|$$run seed $$seed: |"; \
	done; done
	$(PY) -m benchmarks collect

# The real-data coarse-to-fine tier: pretrain SL, SL-MLP, LOOK on a real dataset's coarse labels with the
# protocol's seeds, probe the fine classes, write results/proxy_<DATASET>.{md,csv}:
#   make bench-proxy DATASET=fmnist|cifar100|imagefolder [SOURCE=file or dir] [SEEDS="0 1 2"]
DATASET ?= fmnist
PROXY_ARGS = --dataset $(DATASET) $(if $(SOURCE),--source $(SOURCE)) \
  $(if $(filter command line,$(origin SEEDS)),--seeds $(SEEDS))
bench-proxy: $(STAMP) $(if $(and $(filter fmnist fmnist-full,$(DATASET)),$(if $(SOURCE),,1)),data-fmnist)
	$(PY) -m benchmarks proxy $(PROXY_ARGS) \
	  --command-line "make bench-proxy DATASET=$(DATASET)$(if $(SOURCE), SOURCE=$(SOURCE))$(if $(filter command line,$(origin SEEDS)), SEEDS=\"$(SEEDS)\")"

# Fashion-MNIST is packaged by Debian (dataset-fashion-mnist): install it when missing (as root).
FMNIST_DIR := /usr/share/datasets/fashion-mnist
data-fmnist:
	@test -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "error: Fashion-MNIST is missing: sudo apt-get install dataset-fashion-mnist"; exit 2; fi; }
	@echo "Fashion-MNIST idx files: $(FMNIST_DIR)"

# Every real protocol (COCO 1x/2x in Detectron2 and MMDetection, VOC and ADE20K in MMSegmentation) built,
# loaded and stepped for ITERS iterations here at its real input sizes; batches, lr and length for 1, 8 and
# 16 GPUs: make bench-dryrun [CKPT=...] [ITERS=2] [ONLY="coco:mmdet:1x ..."]
ITERS ?= 2
bench-dryrun: $(STAMP)
	$(PY) -m benchmarks dryrun --iters $(ITERS) $(if $(CKPT),--ckpt $(CKPT)) $(if $(ONLY),--only $(ONLY))

# Every finished (and failed) run under runs/bench -> results/<task>.{md,csv,png}, each method paired with
# BASELINE (default sl; a method or a checkpoint's name), and results/summary.md across tasks
tables: $(STAMP)
	$(PY) -m benchmarks collect $(if $(BASELINE),--baseline $(BASELINE))

bench-pretrain-speed: $(STAMP)
	$(PY) -m pretrain.timers.step_time $(BENCH_ARGS)

# CPU time per training image of each data path (PIL; torchvision.io; the GPU path's file reads) and the cores
# per GPU it takes to feed a training step, on generated ImageNet-like JPEGs or DATA=train folder:
# make bench-data-speed [DATA=...]
bench-data-speed: $(STAMP)
	$(PY) -m pretrain.timers.data_time $(if $(DATA),--data $(DATA))

# Is this machine ready? Environment, pretraining step per method (vs a hand-written loop), data loader,
# 20 iterations of each benchmark; one table, also written to results/gpu_check.md. CPU-sized without a GPU.
# make gpu-check [DATA=/path/to/imagenet/train]
gpu-check: $(STAMP)
	$(PY) -m benchmarks.commands.gpu_check $(if $(DATA),--data $(DATA))

clean-runs:
	rm -rf runs data/generated
