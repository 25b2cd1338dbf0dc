"""The README's and docs/commands.md's commands, resolved as they would run (tests/documented_commands.py):
every one is accepted as written, and the README's real path runs the real protocols."""

from __future__ import annotations

import pytest

from benchmarks.cli import main as benchmarks_main
from tests.conftest import REPO, random_backbone, run_main
from tests.documented_commands import (
    DocumentedCommandError,
    Inputs,
    documented_commands,
    pages,
    resolve,
    user_disk,
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("documented")
    user_disk(root)
    return Inputs(root, random_backbone(root / "ckpt"))


def readme_command(target: str) -> str:
    [command] = [c for c in documented_commands(REPO / "README.md") if c.startswith(f"make {target} ")]
    return command


def plans_of(command: str, inputs: Inputs, variant: int = 0, **kwargs):
    return resolve(command, inputs, **kwargs)[variant].plans


def test_every_documented_command_is_accepted_as_written(inputs):
    refused, checked = [], 0
    for page in pages():
        commands = documented_commands(page)
        assert commands, f"no command found in {page.name}"
        for command in commands:
            try:
                checked += len(resolve(command, inputs))
            except DocumentedCommandError as e:
                refused.append(f"{page.name}: {e}")
    assert refused == []
    assert checked > 40  # every variant of every command


def test_the_readme_benchmarks_on_8_gpus_with_data_run_the_real_protocols(inputs):
    [coco] = plans_of(readme_command("bench-coco"), inputs)
    assert (coco.task.key, coco.schedule, coco.world_size) == (("coco", "detectron2"), "1x", 8)
    assert coco.protocol == {"global_batch": 16, "per_process_batch": 2, "lr": 0.02, "length": "90000 iterations"}
    assert coco.schedule_reason.startswith("the real protocol")
    assert coco.data == inputs.root / "data" / "coco"
    [mmdet] = plans_of(readme_command("bench-coco"), inputs, variant=1)  # [FRAMEWORK=mmdet] [SCHEDULE=1x]
    assert (mmdet.task.key, mmdet.schedule, mmdet.protocol["global_batch"], mmdet.protocol["length"]) == (
        ("coco", "mmdet"), "1x", 16, "12 epochs")
    voc_det = plans_of(readme_command("bench-voc-det"), inputs)
    assert [p.seed for p in voc_det] == [0, 1, 2, 3, 4]  # the benchmark's 5 seeds
    assert {(p.schedule, p.world_size, p.protocol["global_batch"], p.protocol["per_process_batch"], p.protocol["lr"],
             p.protocol["length"]) for p in voc_det} == {("24k", 8, 16, 2, 0.02, "24000 iterations")}
    for target, task in (("bench-voc", "voc"), ("bench-ade", "ade20k")):
        [plan] = plans_of(readme_command(target), inputs)
        assert (plan.task.name, plan.schedule, plan.world_size, plan.protocol["global_batch"],
                plan.protocol["per_process_batch"]) == (task, "1x", 8, 16, 2)


def test_the_readme_pretraining_keeps_its_global_batch_on_8_gpus(inputs):
    [command] = [c for c in documented_commands(REPO / "README.md") if "-m pretrain train" in c]
    [resolved] = resolve(command, inputs)
    [config] = resolved.pretrain_configs
    assert "--nproc_per_node 8" in command
    assert (config.train.batch_size, config.peak_lr, config.method_name) == (1024, 0.4, "look")
    assert config.data.root == str(inputs.root / "data" / "imagenet" / "train")


def test_without_data_the_bench_targets_run_the_smoke_schedule_on_the_embedded_data(inputs):
    for target, task in (("bench-coco", "coco"), ("bench-voc-det", "voc-det"), ("bench-voc", "voc"),
                         ("bench-ade", "ade20k")):
        plans = plans_of(f"make {target} CKPT=...", inputs)
        assert {(p.task.name, p.schedule, p.data) for p in plans} == {(task, "smoke", None)}
        assert plans[0].schedule_reason.startswith("the embedded data")


def test_a_refusal_of_a_schedule_the_data_chose_says_why_it_is_that_schedule(inputs):
    with pytest.raises(DocumentedCommandError, match=r"split over 8 processes; use 1, 2 processes \(schedule smoke: "
                                                     r"the embedded data, because no data is given; DATA= or --data "
                                                     r"runs the real protocol, 1x\)"):
        resolve("make bench-coco CKPT=... GPUS=8", inputs)


def test_a_smoke_run_on_real_data_is_asked_for_by_name_and_says_so(inputs):
    [plan] = plans_of("make bench-coco CKPT=... DATA=/data/coco SCHEDULE=smoke", inputs)
    assert (plan.schedule, plan.data) == ("smoke", inputs.root / "data" / "coco")
    assert "not a benchmark result" in plan.schedule_reason


def test_the_run_command_says_its_schedule_and_why_first_and_plan_runs_nothing(inputs, tmp_path):
    out = tmp_path / "runs"
    result = run_main(benchmarks_main, ["run", "coco", "--ckpt", str(inputs.ckpt), "--data",
                                        str(inputs.root / "data" / "coco"), "--procs", "8", "--device", "cpu",
                                        "--out", str(out), "--plan"])
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("coco/detectron2: schedule 1x (the real protocol, because the data is given"), first
    assert "8 process(es) x 2 images = global batch 16, lr 0.02, 90000 iterations" in first
    assert not out.exists()


# The check fails where the docs and the code part: each case below is a way they part.

def test_the_check_fails_when_the_makefile_default_schedule_goes_back_to_smoke(inputs, tmp_path):
    makefile = tmp_path / "Makefile"
    text = (REPO / "Makefile").read_text()
    assert "SCHEDULE  ?=\n" in text
    makefile.write_text(text.replace("SCHEDULE  ?=\n", "SCHEDULE  ?= smoke\n"))
    with pytest.raises(DocumentedCommandError, match="cannot be split over 8 processes"):
        resolve(readme_command("bench-coco"), inputs, makefile=makefile)


@pytest.mark.parametrize("command, refusal", [
    (".venv/bin/python -m benchmarks.gpu_check", "no module benchmarks.gpu_check"),
    (".venv/bin/python -m benchmarks run coco --ckpt ... --no-such-flag", "refuses the arguments"),
    ("make bench-nothing CKPT=...", "make refuses it"),
    ("make bench-voc CKPT=... DATA=/data/VOCdevkit GPUS=8", "voc data not found"),
    ("make bench-coco CKPT=... DATA=/data/coco GPUS=7", "cannot be split over 7 processes"),
    ("make bench-coco CKPT=... DATA=...", "name the dataset's folder"),
])
def test_the_check_fails_on_a_renamed_module_a_dropped_flag_or_target_or_a_wrong_dataset(inputs, command, refusal):
    with pytest.raises(DocumentedCommandError, match=refusal):
        resolve(command, inputs)


def test_commands_are_read_from_bash_blocks_and_table_rows_not_from_text_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```\nbenchmarks/  not a command\n```\n\n```bash\nmake a \\\n  B=1   # comment\n```\n\n"
                    "| command | what |\n|---|---|\n| `make c [D=e\\|f]` | runs `make g` |\n")
    assert documented_commands(page) == ["make a B=1", "make c [D=e|f]"]

