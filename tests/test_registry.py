"""A benchmark is one declaration: the runner, the tables, the CLI and the demo list all read it."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.registry import REGISTRY, Benchmark, Column, register
from benchmarks.tasks import all_benchmarks, demo_runs, get_benchmark, task_names, task_table
from pretrain.errors import UserError
from tests.conftest import run_main


def _declaration(**changes) -> Benchmark:
    base = Benchmark(name="vocdet", framework="detectron2", title="VOC07+12 detection", required_files=("VOC2007",),
                     embedded_data=lambda: None, run=lambda spec: None, columns=(Column("bbox", "AP50", "AP50"),),
                     required=(("bbox", "AP50"),), headline=("AP50",))
    return dataclasses.replace(base, **changes)


def test_the_shipped_benchmarks_are_registered_once_each():
    keys = [b.key for b in all_benchmarks()]
    assert sorted(keys) == [("ade20k", "mmseg"), ("cls-linear", "frozen"), ("coco", "detectron2"), ("coco", "mmdet"),
                            ("probe", "frozen"), ("voc", "mmseg"), ("voc-det", "detectron2")]
    assert task_table("coco").headline == ("AP_bb", "AP_mk")  # both frameworks declare the same table
    assert "probe:frozen:standard" in demo_runs() and "coco:mmdet:smoke" in demo_runs()
    assert "cls-linear:frozen:smoke" in demo_runs()
    with pytest.raises(ValueError, match="registered twice"):
        register(get_benchmark("voc", "mmseg"))


def test_a_new_declaration_is_seen_everywhere(monkeypatch):
    monkeypatch.setitem(REGISTRY, ("vocdet", "detectron2"), _declaration())
    assert get_benchmark("vocdet", "detectron2").title == "VOC07+12 detection"
    assert "vocdet" in task_names() and "vocdet:detectron2:smoke" in demo_runs()
    # two frameworks of one task must agree on its table
    monkeypatch.setitem(REGISTRY, ("vocdet", "mmdet"), _declaration(framework="mmdet", headline=("AP",)))
    with pytest.raises(ValueError, match="declare different tables"):
        task_table("vocdet")
    with pytest.raises(UserError, match="no benchmark 'vocdet' for framework 'x'"):
        get_benchmark("vocdet", "x")


def test_cli_lists_the_registry():
    from benchmarks.cli import main

    result = run_main(main, ["list", "--demo"])  # the command's own entry point, in this process
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(demo_runs())


def test_the_dry_run_covers_every_real_schedule_with_its_length():
    from benchmarks.commands.dryrun import PROTOCOLS, protocol_length

    assert ("voc-det", "detectron2", "24k") in PROTOCOLS and ("coco", "mmdet", "2x") in PROTOCOLS
    assert not any(schedule in ("smoke", "standard") for _, _, schedule in PROTOCOLS)
    assert protocol_length("voc-det", "detectron2", "24k") == "24000 iterations"
    assert protocol_length("coco", "mmdet", "1x") == "12 epochs"


def test_the_demo_runs_every_demo_benchmark_for_each_backbone_and_says_where_the_time_went(tmp_path, monkeypatch,
                                                                                            capsys):
    from benchmarks.commands import demo

    monkeypatch.chdir(tmp_path)  # the embedded data is generated under ./data/generated
    commands = []
    monkeypatch.setattr(demo, "_command", lambda argv, log: lambda: commands.append(argv))
    monkeypatch.setattr(demo, "_newest_export", lambda run: tmp_path / f"{run}.pth")
    steps = demo.demo(tmp_path / "logs")
    names = [name for name, _ in steps]
    assert names[0] == "generate the benchmarks' embedded data" and names[-1].startswith("collect")
    assert [n for n in names if n.startswith("pretrain")] == [f"pretrain {r}" for r in demo.PRETRAIN_RUNS]
    runs = [argv for argv in commands if argv[:3] == ["-m", "benchmarks", "run"]]
    # one process per framework (and schedule), running its benchmarks for every backbone
    ckpts = [str(tmp_path / f"{r}.pth") for r in demo.PRETRAIN_RUNS]
    asked = set()
    for argv in runs:
        tasks = argv[3:argv.index("--ckpt")]
        assert argv[argv.index("--ckpt") + 1:argv.index("--framework")] == ckpts
        framework, schedule = argv[argv.index("--framework") + 1], argv[argv.index("--schedule") + 1]
        asked |= {f"{task}:{framework}:{schedule}" for task in tasks}
    assert asked == set(demo_runs()) and len(runs) == len({run.split(":", 1)[1] for run in demo_runs()})
    assert all(argv[-2:] == ["--seed", "0"] for argv in runs)  # one seed each, even for voc-det (5 by default)
    [collect] = [argv for argv in commands if argv[:3] == ["-m", "benchmarks", "collect"]]
    assert collect[3:] == ["--out", str(tmp_path / "logs" / "tables")]  # results/ is left alone
    printed = capsys.readouterr().out
    assert "| step | wall time | share |" in printed and "| **total** |" in printed
    assert (tmp_path / "logs" / "times.md").read_text().count("\n| ") == len(steps) + 2


def test_the_demo_time_table_names_each_run_with_its_own_time(tmp_path):
    import json

    from benchmarks.commands.demo import run_times

    lines = []
    for task, framework, seconds in (("coco", "detectron2", 42), ("voc-det", "detectron2", 7)):
        run_dir = tmp_path / "bench" / task / framework / "smoke" / "sl_resnet18_generated_ep6-1a2b3c4d" / "seed0"
        run_dir.mkdir(parents=True)
        (run_dir / "result.json").write_text(json.dumps({"started": "2026-11-27T08:00:00+00:00",
                                                         "finished": f"2026-11-27T08:00:{seconds:02d}+00:00"}))
        lines += ["bbox: AP 1.00", f"run directory: {run_dir}"]
    log = tmp_path / "detectron2_smoke.log"
    log.write_text("\n".join(lines) + "\n")
    assert run_times(log) == [("sl_resnet18_generated_ep6: coco (detectron2)", 42.0),
                              ("sl_resnet18_generated_ep6: voc-det (detectron2)", 7.0)]
    assert run_times(tmp_path / "missing.log") == []


def test_the_demo_time_table_rounds_before_it_splits_minutes_and_seconds():
    from benchmarks.commands.demo import time_table

    table = time_table([("pretrain", 59.6), ("benchmarks", 180.0)])  # 239.6 s in all
    assert "| pretrain | 1 min 00 s | 25% |" in table and "| benchmarks | 3 min 00 s | 75% |" in table
    assert table.endswith("| **total** | **4 min 00 s** | |")  # not '3 min 60 s'


def test_the_schedule_a_run_on_real_data_takes_is_its_published_references():
    from benchmarks.reference import Reference

    chosen = {b.key: b.protocol_schedule for b in all_benchmarks()}
    assert chosen == {("ade20k", "mmseg"): "1x", ("cls-linear", "frozen"): "many-shot", ("coco", "detectron2"): "1x",
                      ("coco", "mmdet"): "1x",
                      ("probe", "frozen"): "standard", ("voc", "mmseg"): "1x", ("voc-det", "detectron2"): "24k"}
    for b in all_benchmarks():
        published = [s for s, r in b.references.items() if isinstance(r, Reference) and r.published]
        if published:  # where a reference publishes results, a run on real data follows that reference
            assert b.protocol_schedule in published, b.key
