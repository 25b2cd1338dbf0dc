# Every target depends on the stamp, so a fresh clone needs nothing but `make <target>`.
PY        := .venv/bin/python
STAMP     := .venv/.installed
CONFIG    ?=
DATA      ?=
OUT       ?=
TEST_ARGS ?=

RUN_ARGS = $(if $(DATA),--data $(DATA)) $(if $(OUT),--out $(OUT))

.PHONY: install test lint demo pretrain-sl pretrain-slmlp pretrain-look pretrain-all bench-pretrain-speed clean-runs

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

# The main job on the embedded data: pretrain SL, SL-MLP and LOOK and export their backbones.
demo: pretrain-all
	@echo; echo "Exported backbones:"; ls -1 runs/pretrain/*/export/*.pth

bench-pretrain-speed: $(STAMP)
	$(PY) -m benchmarks.pretrain_step_time $(BENCH_ARGS)

clean-runs:
	rm -rf runs data/generated
