# Every target depends on the stamp, so a fresh clone needs nothing but `make <target>`.
PY        := .venv/bin/python
STAMP     := .venv/.installed
CONFIG    ?=
DATA      ?=
OUT       ?=
TEST_ARGS ?=

RUN_ARGS = $(if $(DATA),--data $(DATA)) $(if $(OUT),--out $(OUT))

.PHONY: install test lint demo pretrain-sl pretrain-slmlp pretrain-look pretrain-all export bench-pretrain-speed clean-runs

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

# The main job on the embedded data: pretrain SL, SL-MLP and LOOK, then convert each backbone for
# Detectron2, MMDetection and MMSegmentation, verified by the frameworks themselves.
demo: pretrain-all
	@for run in sl_cpu slmlp_cpu look_cpu; do \
	  $(PY) -m transfer export $$(ls -t runs/pretrain/$$run/export/*.pth | head -1) --to all --out runs/transfer --verify \
	    || exit 1; done
	@echo; echo "Pretrained and converted backbones:"; ls -1 runs/transfer/*.pkl runs/transfer/*.pth

# Convert a pretrained backbone for Detectron2 / MMDetection / MMSegmentation and verify it: make export CKPT=...
TO ?= all
export: $(STAMP)
	@test -n "$(CKPT)" || { echo "usage: make export CKPT=path/to/checkpoint [TO=all|detectron2|mmdet|mmseg] [OUT=dir]"; exit 2; }
	$(PY) -m transfer export $(CKPT) --to $(TO) --out $(or $(OUT),runs/transfer) --verify

bench-pretrain-speed: $(STAMP)
	$(PY) -m benchmarks.pretrain_step_time $(BENCH_ARGS)

clean-runs:
	rm -rf runs data/generated
