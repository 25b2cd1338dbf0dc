# Every target depends on the stamp, so a fresh clone needs nothing but `make <target>`.
PY        := .venv/bin/python
STAMP     := .venv/.installed
CONFIG    ?=
DATA      ?=
OUT       ?=
TEST_ARGS ?=

RUN_ARGS = $(if $(DATA),--data $(DATA)) $(if $(OUT),--out $(OUT))

.PHONY: install test lint demo pretrain-sl pretrain-slmlp pretrain-look pretrain-all export bench-coco bench-voc bench-ade bench-probe probe-seeds tables bench-pretrain-speed clean-runs

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

# The main job on the embedded data: pretrain SL, SL-MLP and LOOK; then, for each backbone, the smoke
# benchmarks: Mask R-CNN in Detectron2 and in MMDetection, FCN on VOC and UPerNet on ADE20K in
# MMSegmentation (each converts and verifies the backbone first), and the frozen-feature probe
# (linear, kNN, intra-class diagnostics; coarse-to-fine on the embedded data); then the tables in
# results/. Smoke numbers show the pipeline works; they are not benchmark results.
DEMO_BENCHMARKS := coco:detectron2:smoke coco:mmdet:smoke voc:mmseg:smoke ade20k:mmseg:smoke probe:frozen:standard
demo: pretrain-all
	@mkdir -p runs/bench; for run in sl_cpu slmlp_cpu look_cpu; do \
	  ckpt=$$(ls -t runs/pretrain/$$run/export/*.pth | head -1); \
	  for bench in $(DEMO_BENCHMARKS); do task=$$(echo $$bench | cut -d: -f1); \
	    framework=$$(echo $$bench | cut -d: -f2); schedule=$$(echo $$bench | cut -d: -f3); \
	    log=runs/bench/demo_$${run}_$${task}_$${framework}.log; \
	    echo "$$run: $$task ($$schedule) in $$framework (log: $$log)"; \
	    $(PY) -m benchmarks run $$task --ckpt $$ckpt --framework $$framework --schedule $$schedule > $$log 2>&1 \
	      || { tail -5 $$log; exit 1; }; \
	  done; done
	$(PY) -m benchmarks collect
	@echo "(smoke numbers on generated data: they show the pipeline works, not which method transfers better)"

# Convert a pretrained backbone for Detectron2 / MMDetection / MMSegmentation and verify it: make export CKPT=...
TO ?= all
export: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make export CKPT=path/to/checkpoint [TO=all|detectron2|mmdet|mmseg] [OUT=dir]"; exit 2; }
	$(PY) -m transfer export $(CKPT) --to $(TO) --out $(or $(OUT),runs/transfer) --verify

# Fine-tune and evaluate on COCO: make bench-coco CKPT=... [FRAMEWORK=detectron2] [SCHEDULE=smoke|1x|2x] [DATA=coco/]
FRAMEWORK ?= detectron2
SCHEDULE  ?= smoke
SEED      ?= 0
bench-coco: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make bench-coco CKPT=path [FRAMEWORK=detectron2] [SCHEDULE=smoke|1x|2x] [DATA=dir]"; exit 2; }
	$(PY) -m benchmarks run coco --ckpt $(CKPT) --framework $(FRAMEWORK) --schedule $(SCHEDULE) --seed $(SEED) \
	  $(if $(DATA),--data $(DATA))

# Semantic segmentation in MMSegmentation: make bench-voc CKPT=... [SCHEDULE=smoke|1x|2x] [DATA=VOCdevkit/VOC2012]
bench-voc: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make bench-voc CKPT=path [SCHEDULE=smoke|1x|2x] [DATA=VOCdevkit/VOC2012]"; exit 2; }
	$(PY) -m benchmarks run voc --ckpt $(CKPT) --framework mmseg --schedule $(SCHEDULE) --seed $(SEED) \
	  $(if $(DATA),--data $(DATA))

bench-ade: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make bench-ade CKPT=path [SCHEDULE=smoke|1x|2x] [DATA=ADEChallengeData2016]"; exit 2; }
	$(PY) -m benchmarks run ade20k --ckpt $(CKPT) --framework mmseg --schedule $(SCHEDULE) --seed $(SEED) \
	  $(if $(DATA),--data $(DATA))

# Frozen-feature probe of a backbone on an ImageFolder train/val pair (default: the embedded data by
# sub-mode, i.e. coarse-to-fine): make bench-probe CKPT=... [DATA=dir with train/ val/ [coarse_map.csv]]
bench-probe: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make bench-probe CKPT=path [DATA=dir with train/ and val/]"; exit 2; }
	$(PY) -m benchmarks run probe --framework frozen --schedule standard --ckpt $(CKPT) --seed $(SEED) \
	  $(if $(DATA),--data $(DATA))

# The proxy-transfer report: pretrain every method with each seed on the embedded data, probe each
# backbone (coarse-to-fine), then the tables (results/probe.md has the by-method mean ± std).
SEEDS ?= 0 1 2
probe-seeds: $(STAMP)
	@mkdir -p runs/pretrain; for seed in $(SEEDS); do for run in sl slmlp look; do \
	  out=runs/pretrain/$${run}_cpu$$( [ $$seed = 0 ] || echo _seed$$seed ); \
	  $(PY) -m pretrain train --config pretrain/configs/$${run}_cpu.yaml \
	    $$( [ $$seed = 0 ] || echo --set train.seed=$$seed --out $$out ) > $$out.log 2>&1 || { tail -5 $$out.log; exit 1; }; \
	  $(PY) -m benchmarks run probe --framework frozen --schedule standard --ckpt $$(ls -t $$out/export/*.pth | head -1) \
	    > $$out.probe.log 2>&1 || { tail -5 $$out.probe.log; exit 1; }; \
	  grep -E "^(probe|diagnostics):" $$out.probe.log | sed "s|^|$$run seed $$seed: |"; \
	done; done
	$(PY) -m benchmarks collect

# Every finished (and failed) run under runs/bench -> results/<task>.{md,csv,png}
tables: $(STAMP)
	$(PY) -m benchmarks collect

bench-pretrain-speed: $(STAMP)
	$(PY) -m benchmarks.pretrain_step_time $(BENCH_ARGS)

clean-runs:
	rm -rf runs data/generated
