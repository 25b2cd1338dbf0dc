"""The test session's long commands, run in a background thread on the cores the other tests leave idle.

On 2 cores the tests in this process leave one core idle much of the time (interpreter start-ups, imports,
single-threaded framework code, waiting on subprocesses). The commands that tests read (every benchmark in 2
processes, Detectron2's two smoke runs, MMSegmentation's kill-and-resume, the local sweep, the pretraining
kill -9 and rerun, the torchrun pretrainings, the fused search under Triton's interpreter, the proxy tier) are
started when the session's first test starts, one after the other in one thread, at the lowest priority (nice
19), with one thread each; the tests that read them run last (conftest.py orders them), and while they run the
tests in this process compute on one thread (on their own thread count again once the commands have ended,
when the tests marked `multicore` run). The scheduler gives a nice-19 process a core only when nothing else
wants it (a 2-thread convolution loop: 0.25 s beside a busy nice-19 process, 0.82 s beside a busy one at the
same priority, whose core its second OpenMP thread waits for at every parallel region). That holds inside
one autogroup (one session): `lower_new_sessions` gives the sessions that torchrun's workers start the same
nice value.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

# one thread each: a background process gets a core only while the tests leave one idle
BACKGROUND_ENV = {"OMP_NUM_THREADS": "1"}

# A command prepares in the test process (directories, checkpoints) and returns what the background thread
# calls. It is given the environment its processes get: this process's when the session started, with
# BACKGROUND_ENV (tests change os.environ while the background thread runs).
Prepare = Callable[[pytest.FixtureRequest, pytest.TempPathFactory, dict[str, str]], Callable[[], object]]
COMMANDS: dict[str, Prepare] = {}  # by the name of the session fixture that returns the command's result
PROCESSES: dict[str, int] = {}  # how many processes each runs at once


def background_command(name: str, processes: int = 1) -> Callable[[Prepare], Prepare]:
    """Registers a command's preparation; `name = background_result("name")` beside it makes its fixture.
    The commands that run one process at a time go first: while the tests run, at most one core is idle at a
    time; the commands in 2 processes go last, when the tests have ended and both cores are free."""
    def register(prepare: Prepare) -> Prepare:
        COMMANDS[name], PROCESSES[name] = prepare, processes
        return prepare

    return register


def background_result(name: str) -> object:  # a pytest fixture definition
    """The session fixture `name`: the command's result once it has finished (its readers run last)."""
    def result(background: Background) -> object:
        return background.result(name)

    return pytest.fixture(scope="session", name=name)(result)


def session_order(items: list[pytest.Item]) -> None:
    """The tests that compute on several threads (marked `multicore`) run after the others, and the tests that
    read a background command run last (stable: in their order otherwise). Where the background ends first,
    what is left of the tests then is what gains from the second core (1.5-1.6x faster on 2 threads: trainings
    at 64 px, the real-size dry runs, the mixed-precision runs); until then all tests run on one thread and their
    order costs nothing."""
    items.sort(key=lambda item: (not COMMANDS.keys().isdisjoint(item.fixturenames),
                                 item.get_closest_marker("multicore") is not None))


def _descendants(pid: int) -> Iterator[int]:
    """The processes below `pid` (/proc/PID/task/TID/children: each thread lists the processes it started)."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:  # the thread or process has ended
            continue
        for child in map(int, children):
            yield child
            yield from _descendants(child)


def _autogroup(pid: int) -> tuple[str, int] | None:
    """The process's autogroup and its nice value, e.g. ("/autogroup-1071", 0); None without autogroups."""
    try:
        group, _, nice = Path(f"/proc/{pid}/autogroup").read_text().split()
    except (OSError, ValueError):
        return None
    return group, int(nice)


def lower_new_sessions(stop: threading.Event, interval: float = 0.25) -> None:
    """Until `stop`: nice 19 for the autogroup of every background process in a session of its own.

    With autogroup scheduling (Linux's CONFIG_SCHED_AUTOGROUP, enabled on the 2-core machine) each session is
    one group, and a process's nice value ranks it only inside its group; the groups share the cores fairly.
    torchrun starts each worker in a new session, so the background's torchrun workers took a fair share of
    the cores beside all the tests together (test_training.py's 3 training tests, 20 s alone: 91 s beside a
    2-process torchrun pretraining at nice 19, 22 s once its workers' groups were at nice 19 too)."""
    own = _autogroup(os.getpid())
    if own is None:
        return
    while not stop.wait(interval):
        for pid in _descendants(os.getpid()):
            group = _autogroup(pid)
            try:
                mine = os.getpriority(os.PRIO_PROCESS, pid) == 19  # started by the background thread
                if mine and group is not None and group[0] != own[0] and group[1] != 19:
                    Path(f"/proc/{pid}/autogroup").write_text("19")
            except OSError:  # ended meanwhile
                continue


class Background:
    """Started by the session's autouse fixture: the commands some collected test reads, in one thread."""

    def __init__(self, request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> None:
        self._request, self._factory = request, factory
        # Linux: a thread's nice value is its own, and a process it starts inherits it
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background-commands",
                                        initializer=os.nice, initargs=(19,))
        self._runs: dict[str, Future] = {}
        self._threads: int | None = None  # this process's thread count before the commands started
        self._stop = threading.Event()
        # started with the first command: a selection that reads no background command polls nothing
        self._sessions = threading.Thread(target=lower_new_sessions, args=(self._stop,), daemon=True,
                                          name="background-sessions")

    def start_what_is_read(self) -> None:
        """Starts the commands the collected tests read; while they run, this process computes on one thread
        (called from the main thread: torch's thread count is the calling thread's)."""
        for name in sorted(COMMANDS, key=PROCESSES.__getitem__):  # stable: in their order otherwise
            if any(name in item.fixturenames for item in self._request.session.items):
                self._submit(name)
        if self._runs:
            # the background takes the other core: the tests' own second thread would only compete for it
            # (the suite 235-247 s -> 224 s; this process 179 -> 159 CPU-s: small tensors gain little from 2)
            self._threads = torch.get_num_threads()
            torch.set_num_threads(1)

    def threads_back_when_done(self) -> None:
        """Once every started command has finished, this process computes on its own thread count again (called
        from the main thread before each test: where the tests outlast the background, the second core would
        otherwise sit idle until the session ends; 100 s of a 480 s suite on a machine with slower cores)."""
        if self._threads is not None and all(run.done() for run in self._runs.values()):
            torch.set_num_threads(self._threads)
            self._threads = None

    def result(self, name: str) -> object:
        """The command's result once it has finished (started now if no collected test was known to read it)."""
        if name not in self._runs:
            self._submit(name)
        return self._runs[name].result()

    def _submit(self, name: str) -> None:
        if self._sessions.ident is None:  # not started yet
            self._sessions.start()
        prepared = COMMANDS[name](self._request, self._factory, {**os.environ, **BACKGROUND_ENV})
        self._runs[name] = self._pool.submit(prepared)

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._stop.set()
        if self._sessions.ident is not None:
            self._sessions.join()
        if self._threads is not None:
            torch.set_num_threads(self._threads)
