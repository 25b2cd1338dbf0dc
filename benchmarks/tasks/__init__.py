"""Every benchmark, one module each; importing this package registers them all (no list to edit).

Adding a benchmark is one module here that calls `register(Benchmark(...))`, plus its framework config.
"""

from __future__ import annotations

import importlib
import pkgutil

from benchmarks.registry import REGISTRY, Benchmark, Column
from pretrain.errors import UserError

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def all_benchmarks() -> list[Benchmark]:
    return list(REGISTRY.values())


def get_benchmark(name: str, framework: str) -> Benchmark:
    if (name, framework) not in REGISTRY:
        known = ", ".join(f"{t} --framework {f}" for t, f in REGISTRY)
        raise UserError(f"no benchmark '{name}' for framework '{framework}' yet; available: {known}")
    return REGISTRY[(name, framework)]


def task_names() -> list[str]:
    return list(dict.fromkeys(b.name for b in REGISTRY.values()))


def task_table(name: str) -> Benchmark:
    """The declaration that stands for task `name` in the tables; all its frameworks must agree on it."""
    declared = [b for b in REGISTRY.values() if b.name == name]
    first = declared[0]
    for other in declared[1:]:
        if (other.title, other.columns, other.headline, other.compared, other.claims) != (
                first.title, first.columns, first.headline, first.compared, first.claims):
            raise ValueError(f"{name}: {first.framework} and {other.framework} declare different tables")
    return first


def demo_runs() -> list[str]:
    """`task:framework:schedule` of every benchmark in `make demo`."""
    return [f"{b.name}:{b.framework}:{b.demo_schedule}" for b in REGISTRY.values() if b.demo_schedule]


__all__ = ["Benchmark", "Column", "all_benchmarks", "demo_runs", "get_benchmark", "task_names", "task_table"]
