# Every target depends on the stamp, so a fresh clone needs nothing but `make <target>`.
PY        := .venv/bin/python
STAMP     := .venv/.installed
CONFIG    ?=
DATA      ?=
OUT       ?=
TEST_ARGS ?=

RUN_ARGS = $(if $(DATA),--data $(DATA)) $(if $(OUT),--out $(OUT))

.PHONY: install test lint demo pretrain-sl pretrain-slmlp pretrain-look pretrain-all export bench-coco bench-pretrain-speed clean-runs

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

# The main job on the embedded data: pretrain SL, SL-MLP and LOOK, convert each backbone for Detectron2,
# MMDetection and MMSegmentation (verified by the frameworks), then run the Detectron2 Mask R-CNN smoke
# benchmark on each. Smoke numbers show the pipeline works; they are not benchmark results.
demo: pretrain-all
	@for run in sl_cpu slmlp_cpu look_cpu; do \
	  $(PY) -m transfer export $$(ls -t runs/pretrain/$$run/export/*.pth | head -1) --to all --out runs/transfer --verify \
	    || exit 1; done
	@mkdir -p runs/bench; for run in sl_cpu slmlp_cpu look_cpu; do \
	  echo "Detectron2 Mask R-CNN smoke run for $$run (log: runs/bench/demo_$$run.log)"; \
	  $(PY) -m benchmarks run coco --ckpt $$(ls -t runs/pretrain/$$run/export/*.pth | head -1) --framework detectron2 \
	    --schedule smoke > runs/bench/demo_$$run.log 2>&1 || { tail -5 runs/bench/demo_$$run.log; exit 1; }; \
	  grep -E "^(bbox|segm|run directory|already finished)" runs/bench/demo_$$run.log | sed "s|^|  |"; done
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

bench-pretrain-speed: $(STAMP)
	$(PY) -m benchmarks.pretrain_step_time $(BENCH_ARGS)

clean-runs:
	rm -rf runs data/generated
