"""`python -m benchmarks run TASK --ckpt X --framework F [--data DIR] [--schedule 1x|2x|24k|smoke] [--seed N]`,
`python -m benchmarks sweep FILE [--dry-run] [--executor local|slurm]`, `python -m benchmarks status FILE`,
`python -m benchmarks collect [--runs runs/bench] [--out results]`, `python -m benchmarks demo`, and the tools
(proxy, dryrun, protocols, list)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from pretrain.errors import UserError, report_user_errors
from pretrain.slurm import add_slurm_arguments


def _seeds(args: argparse.Namespace, task: str) -> list[int]:
    from benchmarks.tasks import get_benchmark
    from pretrain.errors import UserError

    if args.seed is not None and args.seeds is not None:
        raise UserError("give --seed N (one run) or --seeds N (seeds 0..N-1), not both")
    if args.seed is not None:
        return [args.seed]
    count = args.seeds if args.seeds is not None else get_benchmark(task, args.framework).default_seeds
    if count < 1:
        raise UserError(f"--seeds must be at least 1, got {count}")
    return list(range(count))


def _run(args: argparse.Namespace) -> int:
    """Every (task, checkpoint, seed) asked, one after the other in this process (imports and framework
    set-up paid once); each is an ordinary run with its own directory and records."""
    from pretrain.collector import imports_without_collection

    with imports_without_collection():  # the imports are most of what the checks do the first time
        from benchmarks.runner import describe_plan, run_benchmark
        from pretrain.distributed import is_main_process, leave_group

        plans = resolve_plans(args)  # every refusal before anything runs
    if is_main_process():  # first: which schedule each run takes and why, the protocol as it will run
        for group in plans:
            print(f"{describe_plan(group[0])}; {Path(group[0].ckpt).name}, seed(s) "
                  f"{', '.join(str(p.seed) for p in group)}", flush=True)
    if args.plan:
        return 0
    asked = [(task, ckpt) for task in args.task for ckpt in args.ckpt]  # resolve_plans' order
    for (task, ckpt), group in zip(asked, plans, strict=True):
        run_dirs = []
        seeds = [plan.seed for plan in group]
        for seed in seeds:  # one after the other; a failing run stops here, the finished ones stay recorded
            if (len(seeds) > 1 or len(asked) > 1) and is_main_process():
                print(f"== {task} {Path(ckpt).name} seed {seed} ({seeds.index(seed) + 1} of {len(seeds)})",
                      flush=True)
            run_dir = run_benchmark(task, ckpt, args.framework, args.schedule, seed, args.data, args.out,
                                    args.procs, args.device, args.opts, seeds_asked=len(seeds))
            if not is_main_process():
                continue
            run_dirs.append(run_dir)
            for group, scores in json.loads((run_dir / "result.json").read_text())["metrics"].items():
                shown = ", ".join(f"{k} {v:.2f}" for k, v in scores.items() if k not in ("APs", "APm", "APl"))
                print(f"{group}: {shown}")
            print(f"run directory: {run_dir}")
        if len(run_dirs) > 1:
            print(_seeds_summary(run_dirs))
    leave_group()  # under torchrun: close the group this process joined, as the suite's own workers do
    return 0


def resolve_plans(args: argparse.Namespace) -> list[list]:
    """`run`'s resolved runs, one list of `benchmarks.runner.Plan` (one per seed) for each task and checkpoint,
    in the order they run: every refusal comes from here, before anything is written."""
    from benchmarks.runner import resolve_run

    return [[resolve_run(task, ckpt, args.framework, args.schedule, seed, args.data, args.out, args.procs,
                         args.device, args.opts) for seed in _seeds(args, task)]
            for task in args.task for ckpt in args.ckpt]


def _seeds_summary(run_dirs: list[Path]) -> str:
    """This command's seeds as their table row says them (collect's own mean ± std)."""
    from benchmarks.commands.collect import gather, summarize
    from benchmarks.tasks import task_table

    frame = gather([Path(d) for d in run_dirs])
    [task] = frame["task"].unique()
    [row] = summarize(frame, task).to_dict("records")
    cells = [f"{c.name} {row[c.name + '_mean']:.2f} ± {row[c.name + '_std']:.2f}" for c in task_table(task).columns]
    return (f"mean ± std over {len(row['seeds'])} seeds ({', '.join(map(str, row['seeds']))}), as in its table "
            f"row: {', '.join(cells)}")


def _list(args: argparse.Namespace) -> int:
    from benchmarks.tasks import all_benchmarks, demo_runs

    if args.demo:
        print("\n".join(demo_runs()))
        return 0
    for b in all_benchmarks():
        print(f"{b.name}:{b.framework}:{','.join(b.schedules)}  {b.title}")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from benchmarks.commands.collect import collect, print_tables

    if args.baseline is not None:
        _check_baseline(args.baseline, args.runs)
    collected = collect(args.runs, args.out, args.baseline or "sl")
    if not collected.rows:
        print(f"no benchmark runs under {args.runs}")
        return 0
    print_tables(collected)
    print(f"\ntables: {', '.join(f'{args.out}/{task}.md' for task in collected.rows)} (+ .csv, .png); across "
          f"tasks: {args.out}/summary.md")
    return 0


def _check_baseline(baseline: str, runs: str) -> None:
    """A baseline named on the command line must be a method or a checkpoint of some run (not a typo)."""
    from benchmarks.commands.collect import gather

    frame = gather(Path(runs))
    known = set() if frame.empty else set(frame["method"]) | set(frame["checkpoint"])
    if baseline not in known:
        raise UserError(f"--baseline {baseline}: no run under {runs} has that method or checkpoint; known: "
                        + (", ".join(sorted(known)) or "none"))


def _plan_seeds(args: argparse.Namespace) -> int:
    from benchmarks.commands.plan_seeds import plan_seeds

    print("\n".join(plan_seeds(args.task, args.effect, args.metric, args.baseline, args.runs, args.sd)))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from benchmarks.commands.demo import demo

    demo(args.logs)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from benchmarks.commands.sweep import grid_table, load_sweep, run_local, submit_slurm, to_run
    from pretrain.slurm import slurm_resources

    sweep = load_sweep(args.file)
    print(grid_table(sweep))
    runs = to_run(sweep)
    resources = slurm_resources(args)
    asked = {**sweep.slurm, **{k: v for k, v in resources.items() if v}}
    where = (f"on SLURM ({', '.join(f'{k} {v}' for k, v in asked.items())}; one job per run, "
             "requeued on preemption or time-out)" if args.executor == "slurm" else f"here, {args.parallel} at a time")
    if args.dry_run:
        print(f"would run {len(runs)} of {len(sweep.runs)} run(s) {where}" + ("" if runs else ": all finished"))
        return 0
    if not runs:
        print("all runs finished; nothing to do")
        return 0
    print(f"running {len(runs)} run(s) {where}", flush=True)
    if args.executor == "slurm":
        ids = submit_slurm(sweep, runs, resources)
        print(f"submitted {len(ids)} job(s): {', '.join(ids)}; watch them: python -m benchmarks status {args.file}")
        return 0
    failures = run_local(sweep, runs, args.parallel)
    if failures:
        from pretrain.errors import UserError

        raise UserError(f"{len(failures)} of {len(runs)} run(s) failed (each recorded in its failure.json): "
                        + "; ".join(f"{run.label}: {error}" for run, error in failures))
    print(f"all {len(runs)} run(s) finished; tables: python -m benchmarks collect --runs {sweep.out}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from benchmarks.commands.sweep import load_sweep, runs_status_table, status_table

    print(status_table(load_sweep(args.file)) if args.file else runs_status_table(Path(args.runs)))
    return 0


def _proxy(args: argparse.Namespace) -> int:
    from benchmarks.commands.proxy import run_proxy

    per_class = None
    if args.train_per_class is not None or args.val_per_class is not None:
        per_class = (args.train_per_class, args.val_per_class)
    command = args.command_line or "python -m benchmarks " + shlex.join(args.invocation)
    table = run_proxy(args.dataset, args.source, args.seeds, args.out, args.results, args.data_dir, args.set,
                      command=command, per_class=per_class, cls_linear_schedule=args.cls_linear_schedule)
    print(f"table: {table} (+ .csv)")
    return 0


def _dryrun(args: argparse.Namespace) -> int:
    from benchmarks.commands.dryrun import dry_run

    dry_run(args.ckpt, args.out, args.iters, args.only)
    return 0


def _reference(args: argparse.Namespace) -> int:
    from benchmarks.commands.reference_runs import run_references

    command = args.command_line or "python -m benchmarks " + shlex.join(args.invocation)
    table = run_references(args.task, args.framework, args.schedule, args.data, args.out, args.procs, args.device,
                           args.trials, args.results, command)
    print(table.read_text())
    print(f"table: {table}")
    return 0


def _protocols(args: argparse.Namespace) -> int:
    from benchmarks.commands.coco_protocol import markdown
    from benchmarks.reference import report
    from benchmarks.tasks import all_benchmarks

    text, problems = report(all_benchmarks())
    print("## Every real protocol against its published reference\n")
    print(text)
    print("## COCO in Detectron2 and MMDetection, side by side\n")
    for schedule in args.schedule:
        print(markdown(schedule))
        print()
    if problems:
        print(f"error: {problems} difference(s) from a reference without a declared reason, or stale reasons",
              file=sys.stderr)
        return 1
    return 0


def _protocol_schedules() -> dict[str, str]:
    from benchmarks.tasks import all_benchmarks

    return {b.name: b.protocol_schedule for b in all_benchmarks() if b.real_schedules}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from benchmarks.tasks import all_benchmarks

    available = {}
    for benchmark in all_benchmarks():
        available.setdefault(benchmark.name, []).append(benchmark.framework)
    p = sub.add_parser("run", help="fine-tune and evaluate a pretrained backbone on one task")
    p.add_argument("task", nargs="+", help="one or more, run one after the other in this process: " + "; ".join(
        f"{name} ({', '.join(fws)})" for name, fws in available.items()))
    p.add_argument("--ckpt", required=True, nargs="+",
                   help="one or more: any checkpoint transfer/ reads (exported backbone, MoCo, timm ...), or a "
                        "released checkpoint's name (moco-v2-800ep, swav-800ep, torchvision://resnet50, "
                        "timm://resnet50.a1_in1k, ...: transfer/named.py)")
    p.add_argument("--framework", default="detectron2")
    p.add_argument("--schedule", help="1x, 2x, 24k or smoke (embedded data, CPU, minutes); default: with --data "
                                      "the real protocol, its published reference's where there is one (" + ", ".join(
                                          f"{name} {schedule}" for name, schedule in _protocol_schedules().items())
                   + "), without --data smoke on the embedded data")
    p.add_argument("--seed", type=int, help="run this one seed")
    p.add_argument("--seeds", type=int, help="run seeds 0..N-1, one run directory each, one after the other "
                                             "(default: the benchmark's: " + ", ".join(
                                                 f"{b.name} {b.default_seeds}" for b in all_benchmarks()
                                                 if b.default_seeds > 1) + ", otherwise 1)")
    p.add_argument("--data", help="dataset root in its standard layout (default for smoke: the embedded data)")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--procs", "--gpus", dest="procs", type=int, default=1,
                   help="processes to train in, one per GPU (Detectron2's launch / torch multiprocessing); with "
                        "--device cpu, CPU processes over gloo. A run may instead be started by torchrun (on one "
                        "machine or several). The protocol's global batch is split over them")
    p.add_argument("--device", default="auto", help="auto (cuda when torch sees a GPU), cuda or cpu")
    p.add_argument("--plan", action="store_true", help="print what would run (schedule and why, processes, "
                                                       "batches, lr, length, data, run directory); run nothing")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides through the framework's own mechanism (Detectron2 merge_from_list, mmengine "
                        "merge_from_dict), e.g. SOLVER.BASE_LR=0.01 or optim_wrapper.optimizer.lr=0.01; a run "
                        "with overrides is another run (its own directory and table row)")
    p.set_defaults(func=_run)
    x = sub.add_parser("proxy", help="real-data coarse-to-fine tier: pretrain sl / sl-mlp / look on coarse labels "
                                     "with several seeds, probe the fine classes, one table")
    x.add_argument("--dataset", required=True, help="fmnist, fmnist-full (one GPU), cifar100 or imagefolder "
                                                    "(benchmarks/configs/proxy/)")
    x.add_argument("--source", help="fmnist(-full): the idx folder (default: Debian's "
                                    "/usr/share/datasets/fashion-mnist); cifar100: cifar-100-python.tar.gz; "
                                    "imagefolder: a folder with train/, val/ "
                                    "and coarse_map.csv")
    x.add_argument("--seeds", type=int, nargs="+", help="pretraining seeds (default: the protocol's)")
    x.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="pretraining override for every run (a new run directory, not the protocol's table)")
    x.add_argument("--train-per-class", type=int, help="training images a fine class (default: the protocol's)")
    x.add_argument("--val-per-class", type=int, help="test images a fine class (default: the protocol's)")
    x.add_argument("--cls-linear-schedule", choices=("many-shot", "smoke"), default="many-shot",
                   help="the schedule of the cls-linear runs, where the protocol has them (smoke: 12 of the 45 "
                        "values of C, at most 100 iterations a fit; a quick check, named in the table)")
    x.add_argument("--out", default="runs/proxy")
    x.add_argument("--data-dir", default="data/proxy", help="where the dataset is written as an ImageFolder")
    x.add_argument("--results", default="results")
    x.add_argument("--command-line", help=argparse.SUPPRESS)  # how make called it, for the table
    x.set_defaults(func=_proxy)
    d = sub.add_parser("dryrun", help="build every real protocol, load the checkpoint, train a few iterations here "
                                      "on the embedded data; print batches / lr / length for 1, 8, 16 GPUs")
    d.add_argument("--ckpt", help="backbone to load (default: a randomly initialised ResNet-50)")
    d.add_argument("--iters", type=int, default=2)
    d.add_argument("--only", nargs="+", metavar="TASK:FRAMEWORK:SCHEDULE", help="e.g. coco:detectron2:1x")
    d.add_argument("--out", default="runs/dryrun")
    d.set_defaults(func=_dryrun)
    q = sub.add_parser("protocols", help="every real protocol against its published reference, key by key, and "
                                         "the COCO protocol of Detectron2 and MMDetection side by side, read from "
                                         "their resolved configs")
    q.add_argument("--schedule", nargs="+", default=["1x"])
    q.set_defaults(func=_protocols)
    r = sub.add_parser("reference", help="does this install reproduce the literature? run the released checkpoints "
                                         "of a task's published references with their trials; measured against "
                                         "published, with a verdict (results/reference_<task>.md)")
    r.add_argument("--task", required=True)
    r.add_argument("--framework", help="one framework (default: every framework with a published reference)")
    r.add_argument("--schedule", help="one real schedule (default: each with a published reference), or smoke: the "
                                      "pipeline on the embedded data with random stand-ins, offline")
    r.add_argument("--data", help="the dataset's folder (required but for smoke)")
    r.add_argument("--trials", type=int, help="fine-tuning runs per checkpoint (default: the published number; "
                                              "smoke: 1)")
    r.add_argument("--out", default="runs/bench")
    r.add_argument("--procs", "--gpus", dest="procs", type=int, default=1)
    r.add_argument("--device", default="auto")
    r.add_argument("--results", help="where the table goes (default: results/; smoke: beside its runs)")
    r.add_argument("--command-line", help=argparse.SUPPRESS)  # how make called it, for the table
    r.set_defaults(func=_reference)
    b = sub.add_parser("list", help="the registered benchmarks (one line each: task:framework:schedules)")
    b.add_argument("--demo", action="store_true", help="only what `make demo` runs, as task:framework:schedule")
    b.set_defaults(func=_list)
    m = sub.add_parser("demo", help="the main job on the embedded data (make demo): pretrain SL, SL-MLP, LOOK; "
                                    "the demo benchmarks for each; collect; a table of where the time went")
    m.add_argument("--logs", default="runs/demo", help="one log per step, and times.md")
    m.set_defaults(func=_demo)
    w = sub.add_parser("sweep", help="run a grid of checkpoints x benchmarks x seeds from a YAML file, here or on "
                                     "SLURM (submitit); only what is not finished")
    w.add_argument("file")
    w.add_argument("--dry-run", action="store_true", help="print the grid and what would run; run nothing")
    w.add_argument("--executor", choices=["local", "slurm"], default="local")
    w.add_argument("--parallel", type=int, default=1, help="local: runs at a time (each gets its own GPUs)")
    add_slurm_arguments(w)
    w.set_defaults(func=_sweep)
    t = sub.add_parser("status", help="the state of a sweep's grid (or, without FILE, of every run under --runs), "
                                      "read from the run directories")
    t.add_argument("file", nargs="?")
    t.add_argument("--runs", default="runs/bench", help="without FILE: the run directories' root")
    t.set_defaults(func=_status)
    c = sub.add_parser("collect", help="gather finished runs into tables and charts in results/")
    c.add_argument("--runs", default="runs/bench")
    c.add_argument("--out", default="results")
    c.add_argument("--baseline", help="what every method is compared with: a method, or a checkpoint's name (its "
                                      "file name without suffixes); default sl")
    c.set_defaults(func=_collect)
    s = sub.add_parser("plan-seeds", help="how many seeds would detect an effect, from the spread of a task's "
                                          "paired runs (or --sd)")
    s.add_argument("--task", required=True)
    s.add_argument("--effect", type=float, help="the difference to detect (default: the claims the task declares)")
    s.add_argument("--metric", help="one compared metric (default: each the effect applies to)")
    s.add_argument("--baseline", default="sl")
    s.add_argument("--runs", default="runs/bench")
    s.add_argument("--sd", type=float, help="plan from this spread of paired differences instead of runs")
    s.set_defaults(func=_plan_seeds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.invocation = list(sys.argv[1:] if argv is None else argv)  # what a table says produced it
    return report_user_errors(lambda: args.func(args))
