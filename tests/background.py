"""The test session's long benchmark commands, run in a background thread while the other tests run.

On 2 cores the tests in this process leave one core idle much of the time (a test's own torch work uses 2
threads at about 1.5 cores' worth; interpreter start-ups and imports use one). The commands that several
tests read (each benchmark in 2 processes, Detectron2's two smoke runs) are started when the session starts,
one after the other in one thread, and their readers run last (conftest.py orders them).

While one runs, the tests use 1 thread, in this process and in the commands they start: 2 OpenMP threads on
2 cores of which another process holds one wait for each other at every parallel region (a small convolution
loop: 0.82 s with 2 threads against 0.37 s with 1 when a busy process shares the cores). The thread count is
chosen when a test starts and kept for the whole test (its results may be compared to the bit).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

# what the background commands run with: they always share the cores with a test
BACKGROUND_ENV = {"OMP_NUM_THREADS": "1"}
CHILD_THREADS = "2"  # what a command a test starts runs with when nothing runs in the background

# A command prepares in the test process (directories, checkpoints, a copy of the environment: tests change
# os.environ while the background thread runs) and returns what the background thread calls.
Prepare = Callable[[pytest.FixtureRequest, pytest.TempPathFactory], Callable[[], object]]
COMMANDS: dict[str, Prepare] = {}  # by the name of the session fixture that returns the command's result


def background_command(name: str) -> Callable[[Prepare], Prepare]:
    def register(prepare: Prepare) -> Prepare:
        COMMANDS[name] = prepare
        return prepare

    return register


def readers_last(items: list[pytest.Item]) -> None:
    """The tests that read a background command run after the others (stable: in their order otherwise)."""
    items.sort(key=lambda item: not COMMANDS.keys().isdisjoint(item.fixturenames))


class Background:
    """Started by the session's autouse fixture: the commands some collected test reads, in one thread."""

    def __init__(self, request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> None:
        import torch

        self._request, self._factory = request, factory
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background-commands")
        self._runs: dict[str, Future] = {}
        self._threads = torch.get_num_threads()  # this process's own, when nothing runs in the background

    def start_what_is_read(self) -> None:
        for name, prepare in COMMANDS.items():
            if any(name in item.fixturenames for item in self._request.session.items):
                self._runs[name] = self._pool.submit(prepare(self._request, self._factory))

    def busy(self) -> bool:
        return any(not run.done() for run in self._runs.values())

    def result(self, name: str) -> object:
        """The command's result once it has finished (started now if no collected test was known to read it)."""
        if name not in self._runs:
            self._runs[name] = self._pool.submit(COMMANDS[name](self._request, self._factory))
        return self._runs[name].result()

    def threads_for_one_test(self) -> int:
        """Set this process's threads and those of the commands a test starts (OMP_NUM_THREADS, set since the
        session started: only its value changes while the background thread may copy the environment)."""
        import torch

        busy = self.busy()
        torch.set_num_threads(1 if busy else self._threads)
        os.environ["OMP_NUM_THREADS"] = BACKGROUND_ENV["OMP_NUM_THREADS"] if busy else CHILD_THREADS
        return torch.get_num_threads()

    def __enter__(self) -> Background:
        self._environ = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = CHILD_THREADS
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        self._pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(self._threads)
        if self._environ is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = self._environ
