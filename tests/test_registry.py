"""A benchmark is one declaration: the runner, the tables, the CLI and the demo list all read it."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.registry import REGISTRY, Benchmark, Column, register
from benchmarks.tasks import all_benchmarks, demo_runs, get_benchmark, task_names, task_table
from pretrain.errors import UserError
from tests.conftest import run_cli


def _declaration(**changes) -> Benchmark:
    base = Benchmark(name="vocdet", framework="detectron2", title="VOC07+12 detection", required_files=("VOC2007",),
                     embedded_data=lambda: None, run=lambda spec: None, columns=(Column("bbox", "AP50", "AP50"),),
                     required=(("bbox", "AP50"),), headline=("AP50",))
    return dataclasses.replace(base, **changes)


def test_the_shipped_benchmarks_are_registered_once_each():
    keys = [b.key for b in all_benchmarks()]
    assert sorted(keys) == [("ade20k", "mmseg"), ("coco", "detectron2"), ("coco", "mmdet"), ("probe", "frozen"),
                            ("voc", "mmseg")]
    assert task_table("coco").headline == ("AP_bb", "AP_mk")  # both frameworks declare the same table
    assert "probe:frozen:standard" in demo_runs() and "coco:mmdet:smoke" in demo_runs()
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
    result = run_cli("-m", "benchmarks", "list", "--demo")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(demo_runs())
