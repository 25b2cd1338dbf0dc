"""The commands the README and docs/commands.md show, resolved as they would run, without running them.

A documented command is taken from a page (its `bash` code blocks, and the commands in the first column of
its tables), its optional `[...]` parts and `a|b` alternatives expanded into variants, its placeholders (`...`,
`FILE`, `N`) filled with real inputs, and then:
- a `make` command through `make -n` (the Makefile's own defaults and expansions) to the command lines it
  would run;
- each `python -m <module>` / `torchrun -m <module>` line through that module's own argument parser, and
  `benchmarks run` on through the CLI's own resolution (`benchmarks.cli.resolve_plans`: task, schedule and
  why, processes, global and per-process batch, lr, length), `pretrain train|submit` through its config.
A renamed module, a dropped flag or target, a protocol that cannot be split over the documented GPUs is a
`DocumentedCommandError`; what each command resolves to is returned for the tests to assert on.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import REPO

FENCE = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.S | re.M)  # command blocks; a bare ``` block is text
INLINE = re.compile(r"`((?:make|\.venv/bin/python -m|python -m) [^`]+)`")
OPTIONAL = re.compile(r"\[([^\[\]]+)\]")
# Make targets whose recipe runs no command of this project that a parser could check (a shell loop, pip, apt).
UNCHECKED_TARGETS = {"install": "scripts/install.sh", "lint": "ruff", "clean-runs": "rm",
                     "data-fmnist": "apt-get when the dataset is missing",
                     "probe-seeds": "a shell loop over seeds and methods (its commands are the ones checked here)"}


class DocumentedCommandError(AssertionError):
    pass


@dataclass
class Resolved:
    """One variant of a documented command, and what it runs."""

    documented: str  # as the page writes it
    variant: str  # with optional parts chosen and placeholders filled
    lines: list[str] = field(default_factory=list)  # the command lines it runs (make: from `make -n`)
    parsed: list[tuple[str, argparse.Namespace]] = field(default_factory=list)  # (module, arguments)
    plans: list[Any] = field(default_factory=list)  # benchmarks run: benchmarks.runner.Plan, one per seed
    pretrain_configs: list[Any] = field(default_factory=list)  # pretrain train / submit: the resolved Config


def documented_commands(page: Path) -> list[str]:
    """Every command a page shows: its code blocks' lines (continuations joined, comments dropped) and, in a
    table, the commands in inline code."""
    text = page.read_text()
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                commands.append(re.sub(r"\s+", " ", line))
    for row in (line for line in text.splitlines() if line.startswith("|")):
        first_cell = re.split(r"(?<!\\)\|", row)[1]
        commands += [c.replace("\\|", "|").strip() for c in INLINE.findall(first_cell)]
    return commands


def variants(command: str) -> list[str]:
    """The command with no optional part, then with all of them, once per alternative of `a|b` choices
    (the i-th alternative of each, or its last)."""
    bare = re.sub(r"\s+", " ", OPTIONAL.sub("", command)).strip()
    full = OPTIONAL.sub(lambda m: m.group(1), command)
    tokens = shlex.split(full)
    choices = [_alternatives(token) for token in tokens]
    widest = max(len(c) for c in choices)
    found = [bare]
    for i in range(widest):
        found.append(shlex.join(c[min(i, len(c) - 1)] for c in choices))
    if "|" in bare:  # alternatives outside an optional part
        found[0] = shlex.join(c[0] for c in (_alternatives(t) for t in shlex.split(bare)))
    return list(dict.fromkeys(found))


def _alternatives(token: str) -> list[str]:
    if "|" not in token or token.startswith(("'", '"')):
        return [token]
    key, sep, values = token.rpartition("=") if "=" in token else ("", "", token)
    return [f"{key}{sep}{value}" for value in values.split("|")]


# The user's disk the documented commands name: every dataset in its standard layout (the folders and files
# the benchmarks require), under the names the docs use (`/data/coco` and `coco/` are both `<root>/data/coco`).
DATASETS = {"coco": ("coco",), "VOCdevkit": ("voc-det",), "VOCdevkit/VOC2012": ("voc",),
            "ADEChallengeData2016": ("ade20k",), "imagenet": ("probe",)}


def user_disk(root: Path) -> Path:
    """`root/data` with every dataset the docs name, in its standard layout (empty files: nothing is read)."""
    from benchmarks.tasks import all_benchmarks

    data = root / "data"
    for folder, tasks in DATASETS.items():
        for benchmark in all_benchmarks():
            if benchmark.name in tasks:
                for name in benchmark.required_files:
                    path = data / folder / name
                    if Path(name).suffix:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.touch()
                    else:
                        path.mkdir(parents=True, exist_ok=True)
    (data / "imagenet" / "train" / "n01440764").mkdir(parents=True, exist_ok=True)
    return data


@dataclass
class Inputs:
    """What fills the placeholders: real files the commands can read."""

    root: Path  # holds the user's disk (`user_disk`): the documented data paths point there
    ckpt: Path  # a backbone checkpoint this suite exported

    def fill(self, command: str) -> str:
        out = []
        tokens = shlex.split(command)
        for i, token in enumerate(tokens):
            before = tokens[i - 1] if i else ""
            key, sep, value = token.partition("=")
            if sep and re.fullmatch(r"[A-Z_]+", key):  # a make variable
                if key == "OPTS" and value.startswith("KEY=VALUE"):
                    continue  # the form of an override, not one
                out.append(f"{key}={self._value(key, value)}")
            elif before in ("--ckpt", "--config", "--data", "--source"):
                out.append(self._value(before.lstrip("-").upper(), token))
            elif token in ("FILE", "N", "G"):
                out.append(self._value(token, token))
            else:
                out.append(token)
        return shlex.join(out)

    def _value(self, key: str, value: str) -> str:
        if key == "CKPT" and not Path(value).is_file():
            return str(self.ckpt)
        if key == "CONFIG" and value == "...":
            return "pretrain/configs/look_cpu.yaml"
        if key == "DATA":
            if value in ("...", "dir"):
                raise DocumentedCommandError(f"DATA={value}: name the dataset's folder (e.g. /data/coco)")
            return str(self.root / "data" / value.lstrip("/").removeprefix("data/"))
        if key == "FILE":
            return "benchmarks/configs/sweeps/smoke.yaml"
        if key in ("N", "G") or value in ("N", "G"):  # a count: 2 processes, nodes, GPUs
            return "2"
        if value == "...":  # a path the command only passes on (SOURCE=..., OUT=...)
            return str(self.root / key.lower())
        return value


def make_lines(command: str, makefile: Path) -> list[str]:
    """The command lines `make` would run for a documented make command (`make -n`)."""
    words = shlex.split(command)[1:]
    done = subprocess.run(["make", "-n", "--no-print-directory", "-f", str(makefile), *words], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode:
        raise DocumentedCommandError(f"`{command}`: make refuses it: {done.stderr.strip() or done.stdout.strip()}")
    return [line.strip() for line in done.stdout.replace("\\\n", " ").splitlines() if line.strip()]


def parser_for(module: str) -> argparse.ArgumentParser:
    """The argument parser a `-m module` command meets."""
    try:
        found = importlib.import_module(f"{module}.cli" if module in ("benchmarks", "pretrain", "transfer")
                                        else module)
    except ModuleNotFoundError as e:
        raise DocumentedCommandError(f"no module {module} ({e})") from None
    if not hasattr(found, "build_parser"):
        raise DocumentedCommandError(f"{module} has no build_parser to check its arguments with")
    return found.build_parser()


def python_command(line: str) -> tuple[str, list[str]] | None:
    """(module, arguments) of a `python -m` or `torchrun ... -m` line; None for anything else."""
    words = shlex.split(line)
    if not words or Path(words[0]).name not in ("python", "python3", "torchrun"):
        return None
    if "-m" not in words:
        raise DocumentedCommandError(f"`{line}`: not a `-m module` command")
    at = words.index("-m")
    return words[at + 1], words[at + 2:]


def check_python(module: str, args: list[str], resolved: Resolved) -> None:
    if module == "pytest":
        resolved.parsed.append((module, argparse.Namespace(args=args)))
        return
    parser = parser_for(module)
    try:
        parsed = parser.parse_args(args)
    except SystemExit:
        raise DocumentedCommandError(f"`{resolved.variant}`: {module} refuses the arguments {shlex.join(args)}") \
            from None
    resolved.parsed.append((module, parsed))
    command = getattr(parsed, "command", None)
    if module == "benchmarks" and command == "run":
        from benchmarks.cli import resolve_plans

        resolved.plans += [plan for plans in _user_errors(lambda: resolve_plans(parsed), resolved) for plan in plans]
    elif module == "pretrain" and command in ("train", "submit"):
        from pretrain.cli import _config

        resolved.pretrain_configs.append(_user_errors(lambda: _config(parsed), resolved))


def _user_errors(call, resolved: Resolved):
    from pretrain.errors import UserError

    try:
        return call()
    except UserError as e:
        raise DocumentedCommandError(f"`{resolved.documented}` (as `{resolved.variant}`) is refused: {e}") from None


def resolve(documented: str, inputs: Inputs, makefile: Path = REPO / "Makefile") -> list[Resolved]:
    """Every variant of a documented command, resolved."""
    out = []
    for variant in variants(documented):
        filled = inputs.fill(variant)
        resolved = Resolved(documented, filled)
        words = shlex.split(filled)
        if words[0] == "make":
            target = next((w for w in words[1:] if "=" not in w and not w.startswith("-")), "")
            resolved.lines = make_lines(filled, makefile)
            if target in UNCHECKED_TARGETS:
                out.append(resolved)
                continue
        else:
            resolved.lines = [filled]
        for line in resolved.lines:
            found = python_command(line.removeprefix("@"))
            if found:
                check_python(*found, resolved)
        if not resolved.parsed:
            raise DocumentedCommandError(f"`{filled}` runs no command of this project that could be checked: "
                                         f"{resolved.lines}")
        out.append(resolved)
    return out


def pages() -> list[Path]:
    return [REPO / "README.md", REPO / "docs" / "commands.md"]
