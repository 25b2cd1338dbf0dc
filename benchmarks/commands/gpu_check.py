"""`make gpu-check`: is this machine ready? One table: environment, pretraining step, data pipeline, benchmarks.

On a GPU: ResNet-50 at 224 px, batch 256, the trainer's `auto` precision (bf16 where native) and
channels_last; LOOK with a memory of ImageNet's 1,281,167 x 128 slots; the ImageNet config's data paths with its
workers (on generated ImageNet-like JPEGs unless a folder is given): images/s and CPU cores busy of the file path
(PIL in the workers) and of the GPU path (`data.decoder: gpu`), and the CPU time a training image costs on one
thread in each (pretrain.timers.data_time); 20 iterations of each benchmark's real
1x protocol (per-GPU batch of 8 GPUs).
On a CPU the same table, CPU-sized: ResNet-18 at the CPU config's 64 px, batch 32, the smoke schedules.
For each method, where a step's wall time goes (torch.profiler): the GPU's work, the GPU's wait for the host,
and the operations the host dispatches.
Figures are printed and written to results/gpu_check.md, never asserted.

  python -m benchmarks.commands.gpu_check [--data /path/to/imagenet/train] [--quick]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pretrain.config import load_config
from pretrain.data import build_train_dataset
from pretrain.data.gpu_decode import GpuDecodedImages, gpu_decoder_missing
from pretrain.files import atomic_write_text
from pretrain.methods import fused_search
from pretrain.timers import synchronize
from pretrain.timers.step_time import IMAGENET_TRAIN_IMAGES, HandWrittenSL, Setup, measure, profile_steps
from pretrain.trainer import choose_precision, on_off, pick_device

BENCHMARKS = [("coco", "detectron2"), ("coco", "mmdet"), ("voc", "mmseg")]
LOOK_BF16 = "look, bf16 search"
LOOK_FUSED = "look, fused bf16 search"
LOOK_COMPILED = "look, compiled"
LOOK_COMPILED_FUSED = "look, compiled, fused bf16 search"
LOOK_COMPILED_BF16 = "look, compiled, bf16 search"
LOOK_GRAPHS = "look, compiled as CUDA graphs"
LOOKS = ("look", LOOK_BF16, LOOK_FUSED, LOOK_COMPILED, LOOK_COMPILED_BF16, LOOK_COMPILED_FUSED, LOOK_GRAPHS)
TARGETS = {**{f"{name} / sl": "≤ 1.03 on a GPU" for name in (*LOOKS, "sl-mlp")},
           "trainer / hand-written": "≥ 0.95"}


def environment(device: torch.device) -> list[tuple[str, str]]:
    rows = [("torch", torch.__version__), ("CUDA (torch build)", torch.version.cuda or "none")]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rows += [("card", f"{props.name}, {props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}"),
                 ("driver", _driver_version()),
                 ("cuDNN", str(torch.backends.cudnn.version())),
                 ("bf16 native", "yes" if torch.cuda.is_bf16_supported(including_emulation=False) else "no"),
                 ("NCCL", ".".join(map(str, torch.cuda.nccl.version())))]
    else:
        rows += [("card", f"none: CPU ({platform.machine()}, {torch.get_num_threads()} threads)"),
                 ("cuDNN", str(torch.backends.cudnn.version()) + " (in the wheel)")]
    rows.append(("gloo / nccl in torch", f"{_yes(torch.distributed.is_gloo_available())} / "
                                         f"{_yes(torch.distributed.is_nccl_available())}"))
    rows.append(("mmcv CUDA ops built", _mmcv_cuda()))
    return rows


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _driver_version() -> str:
    if not shutil.which("nvidia-smi"):
        return "unknown (no nvidia-smi)"
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"


def _mmcv_cuda() -> str:
    try:
        from mmcv.ops import get_compiling_cuda_version
    except ImportError as e:  # mmcv without compiled ops at all
        return f"no ({e})"
    version = get_compiling_cuda_version()
    return "no (CPU ops only)" if version == "not available" else f"yes (CUDA {version})"


def pretraining(args: argparse.Namespace, device: torch.device) -> tuple[list[tuple[str, str]], float]:
    """Step time of each method and of a hand-written SL loop; returns rows and SL's images/s."""
    def look(label: str | None = None, params: dict | None = None):
        return lambda: Setup("look", args.slots, args, device, label, params)

    makers = [("sl", lambda: Setup("sl", 0, args, device)), ("sl-mlp", lambda: Setup("sl-mlp", 0, args, device)),
              ("look", look()), (LOOK_BF16, look(LOOK_BF16, {"search_dtype": "bfloat16"}))]
    fused = {"search_dtype": "bfloat16", "search_kernel": "fused"}
    if fused_search.available(device):  # the Triton kernel: a GPU with bfloat16 tensor cores
        makers.append((LOOK_FUSED, look(LOOK_FUSED, fused)))
    if device.type == "cuda":  # what compiling removes is the launch overhead of a GPU (inductor compiles first)
        makers.append((LOOK_COMPILED, look(LOOK_COMPILED, {"compile": True})))
        makers.append((LOOK_COMPILED_BF16, look(LOOK_COMPILED_BF16, {"search_dtype": "bfloat16", "compile": True})))
        makers.append((LOOK_GRAPHS, look(LOOK_GRAPHS, {"compile": True, "compile_mode": "reduce-overhead"})))
        if fused_search.available(device):
            makers.append((LOOK_COMPILED_FUSED, look(LOOK_COMPILED_FUSED, {**fused, "compile": True})))
    makers.append(("sl, hand-written loop", lambda: HandWrittenSL(args, device)))
    setups, failed = warmed_up(makers, args.warmup)
    peaks = {setup.label: setup.peak_memory_mb() for setup in setups}
    rows_by_name = {row["method"]: row for row in measure(setups, 0, args.rounds, args.steps)}
    sl = rows_by_name["sl"]
    memory = f"memory {args.slots:,} x {args.look['embed_dim']}"
    described = {"look": f"look ({memory})", LOOK_BF16: f"look ({memory}, opt-in bfloat16 search)",
                 LOOK_FUSED: f"look ({memory}, bfloat16 search in two Triton kernels, the similarities never written)",
                 LOOK_COMPILED: f"look ({memory}, search and loss through torch.compile)",
                 LOOK_COMPILED_BF16: f"look ({memory}, bfloat16 search and loss through torch.compile)",
                 LOOK_GRAPHS: f"look ({memory}, search and loss through torch.compile, replayed as CUDA graphs)",
                 LOOK_COMPILED_FUSED: f"look ({memory}, torch.compile and the Triton search)"}
    rows = []
    for name, row in rows_by_name.items():
        peak = f", peak memory {peaks[name] / 1024:.1f} GiB" if peaks[name] is not None else ""
        timing = f"{row['ms_per_step']:.1f} ms, {row['images_per_s']:.0f} images/s{peak}"
        rows.append((f"step: {described.get(name, name)}", timing))
    rows += [(f"step: {described.get(name, name)}", error) for name, error in failed.items()]
    ratios = {name + " / sl": rows_by_name[name]["ms_per_step"] / sl["ms_per_step"]
              for name in LOOKS if name in rows_by_name}
    ratios["sl-mlp / sl"] = rows_by_name["sl-mlp"]["ms_per_step"] / sl["ms_per_step"]
    ratios["trainer / hand-written"] = sl["images_per_s"] / rows_by_name["sl, hand-written loop"]["images_per_s"]
    rows += [(f"ratio {name}", f"{value:.3f} (target {TARGETS[name]})") for name, value in ratios.items()]
    rows += [(f"profile: {setup.label}", profile_row(setup, rows_by_name[setup.label]["ms_per_step"], args.steps))
             for setup in setups]
    return rows, sl["images_per_s"]


def warmed_up(makers: list, warmup: int) -> tuple[list[Setup], dict[str, str]]:
    """Builds each setup and runs its warm-up steps (compiling, where it compiles). A LOOK variant that fails
    (a kernel the card cannot compile, say) becomes a row saying why, so the rest of the table still comes out;
    SL and the hand-written loop must run."""
    setups, failed = [], {}
    for label, make in makers:
        try:
            setup = make()
            setup.run(warmup, record=False)
        except Exception as error:  # noqa: BLE001 - reported in the table
            if label not in LOOKS:
                raise
            failed[label] = f"failed: {type(error).__name__}: {' '.join(str(error).split())[:300]}"
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        setups.append(setup)
    return setups, failed


def profile_row(setup: Setup, wall_ms: float, steps: int) -> str:
    """Where a step's wall time goes: the GPU's work and its wait for the host (a step with many small
    operations is bound by their launches, not by the GPU)."""
    profiled = profile_steps(setup, steps)
    operations = f"{profiled['operations']:,.0f} operations a step"
    if setup.device.type != "cuda":
        return f"wall {wall_ms:.1f} ms, {operations} (GPU work and GPU idle: on a GPU)"
    work = profiled["device_ms"]
    idle = "; ".join(f"{name} {ms:.2f} ms" for name, ms in list(profiled["idle_during"].items())[:4])
    waits = "; ".join(f"{name} {n:g}" for name, n in profiled["host_waits"].items()) or "none"
    return (f"wall {wall_ms:.1f} ms = GPU work {work:.1f} ms + GPU idle {max(0.0, wall_ms - work):.1f} ms, "
            f"{operations}; GPU idle while the host was in (profiled): {idle or 'nothing'}; "
            f"host waits for the GPU a step: {waits}")


GPU_PATH_GOAL = (1.2, 4.0)  # the GPU path feeds >= 1.2 x SL's step from <= 4 CPU cores per GPU


def feed_rate(batches: Iterator, count: int, device: torch.device) -> tuple[float, float | None]:
    """Images/s a loader delivers over `count` batches after its first, and the CPU cores it keeps busy meanwhile
    (this process and its worker processes; None where /proc cannot say)."""
    from pretrain.timers.data_time import process_tree_cpu_seconds

    next(batches)  # workers started, first batch decoded
    synchronize(device)
    before, started, images = process_tree_cpu_seconds(), time.perf_counter(), 0
    for _, batch in zip(range(count), batches, strict=False):
        images += len(batch[0])
    synchronize(device)
    wall, after = time.perf_counter() - started, process_tree_cpu_seconds()
    busy = None if before is None or after is None else sum(after.get(pid, 0.0) - seconds
                                                            for pid, seconds in before.items()) / wall
    stop = getattr(batches, "close", None) or getattr(batches, "_shutdown_workers", None)
    if stop is not None:  # the workers stopped now, not by the garbage collector
        stop()
    return images / wall, busy


def decoded_against_pil(decoder: GpuDecodedImages, count: int) -> str:
    """How far the GPU path's decoder is from PIL's (JPEG decoders differ in their IDCT and upsampling)."""
    from pretrain.data.gpu_decode import FileBytes

    samples = decoder.dataset.samples[:count]
    decoded = decoder.decode([FileBytes.read(path) for path, _ in samples], list(range(len(samples))))
    worst, total, values = 0, 0.0, 0
    for image, index in zip(decoded, range(len(samples)), strict=True):
        pil = torch.from_numpy(np.asarray(decoder.dataset.load(index))).permute(2, 0, 1).int()
        difference = (image.cpu().int() - pil).abs()
        worst, total, values = max(worst, int(difference.max())), total + float(difference.sum()), values + pil.numel()
    return f"{len(samples)} images: max {worst} grey levels, mean {total / values:.3f}"


def _cores(busy: float | None) -> str:
    return "CPU cores busy: not measurable here" if busy is None else f"{busy:.1f} CPU cores busy"


def data_pipeline(args: argparse.Namespace, device: torch.device, step_images_per_s: float
                  ) -> list[tuple[str, str]]:
    """Images/s and CPU cores of the file path (PIL in the config's workers) and of the GPU path (nvjpeg on the
    device; on a CPU its code with libjpeg-turbo in this process), and each path's CPU time per image."""
    from pretrain.data.imagenet_like import ImageNetLikeConfig, generate_imagenet_like
    from pretrain.data.sampler import GlobalBatchSampler
    from pretrain.timers.data_time import jpeg_paths, time_paths

    data = args.config.data
    # without a folder: JPEGs shaped like ImageNet's (decoding them is most of the loader's work), written once
    data.root = args.data or data.root or str(generate_imagenet_like(
        ImageNetLikeConfig(images=args.batch * (args.data_batches + 1)), data.generated_dir))
    dataset = build_train_dataset(data)
    sampler = GlobalBatchSampler(len(dataset), args.batch, seed=0)
    files = torch.utils.data.DataLoader(dataset, batch_size=args.batch, sampler=sampler, drop_last=True,
                                        num_workers=data.workers, pin_memory=device.type == "cuda")
    file_rate, file_busy = feed_rate(iter(files), args.data_batches, device)
    decoder = GpuDecodedImages(dataset, device, data.image_size, data.crop_scale, data.mean, data.std, data.workers)
    gpu_rate, gpu_busy = feed_rate(decoder.batches(sampler, seed=0, rank=0, epoch=0), args.data_batches, device)
    missing = gpu_decoder_missing(device)
    gpu_name = f"nvjpeg on {device}" if missing is None else "its code on the CPU: libjpeg-turbo in this process"
    pixels = decoded_against_pil(decoder, 16)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU seconds of one thread: what each loader worker costs
    try:
        paths = time_paths(jpeg_paths(dataset.root, 64), step_images_per_s, data.image_size,
                           tuple(data.crop_scale), data.mean, data.std)
    finally:
        torch.set_num_threads(threads)
    per_path = "; ".join(f"{r['path']} {r['total_ms']:.2f} ms, {r['cores_per_gpu']:.1f} cores" for r in paths)
    times, most = GPU_PATH_GOAL
    goal = (f"GPU path {gpu_rate / step_images_per_s:.2f} x the step from {_cores(gpu_busy)} (goal ≥ {times} x "
            f"from ≤ {most:.0f} cores{', on a GPU' if missing else ''})")
    return [(f"data: {dataset.root} ({len(dataset):,} images)", f"decoded + augmented at {data.image_size} px"),
            (f"data: file path, PIL in {data.workers} worker(s)", f"{file_rate:.0f} images/s, {_cores(file_busy)}"),
            (f"data: GPU path ({gpu_name}), {data.workers} worker(s) read the files",
             f"{gpu_rate:.0f} images/s, {_cores(gpu_busy)}"),
            ("data: GPU path's decoded pixels against PIL's", pixels),
            ("data vs step (one process)", f"file path {file_rate:.0f}, GPU path {gpu_rate:.0f} vs sl step "
                                           f"{step_images_per_s:.0f} images/s; {goal}"),
            ("data: CPU per image, one thread (pretrain.timers.data_time)",
             f"decode + augment {per_path} to feed the sl step's {step_images_per_s:.0f} images/s")]


def benchmark_smokes(args: argparse.Namespace, device: torch.device) -> list[tuple[str, str]]:
    from benchmarks.commands.dryrun import STEPPED_WORLD_SIZE, random_backbone, step_protocol

    gpu = device.type == "cuda"
    schedule, world = ("1x", STEPPED_WORLD_SIZE) if gpu else ("smoke", 1)
    out = Path(args.work) / "benchmarks"
    ckpt = random_backbone(out, "resnet50" if gpu else "resnet18")
    rows = []
    for task, framework in BENCHMARKS:
        record = step_protocol(task, framework, schedule, ckpt, out, args.bench_iters, world_size=world)
        seconds = record["seconds_per_iter"][1:] or record["seconds_per_iter"]
        rows.append((f"benchmark: {task} {framework} {schedule}, {args.bench_iters} iterations",
                     f"{sum(seconds) / len(seconds):.2f} s/iter at {record['per_process_batch']} images per "
                     f"process, {record['wall_s']:.0f} s with build and load"))
    return rows


def markdown(sections: list[tuple[str, list[tuple[str, str]]]], header: str) -> str:
    lines = [header, "", "| check | result |", "|---|---|"]
    for title, rows in sections:
        lines.append(f"| **{title}** | |")
        lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.commands.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--config", help="pretraining config for arch, image size, precision and data workers "
                                         "(default: sl_imagenet_r50.yaml on a GPU, sl_cpu.yaml on a CPU)")
    parser.add_argument("--data", help="ImageFolder train folder for the data check (default: the config's; "
                                       "without one, generated ImageNet-like JPEGs)")
    parser.add_argument("--batch", type=int, help="images per step (default: 256 on a GPU, 32 on a CPU)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every part runs (tests)")
    parser.add_argument("--no-benchmarks", action="store_true",
                        help="leave out the benchmark iterations (a machine without detectron2 / mmdet / mmseg)")
    parser.add_argument("--out", default="results/gpu_check.md")
    parser.add_argument("--work", default="runs/gpu_check")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    device = pick_device(args.device)
    gpu = device.type == "cuda"
    config_path = args.config or f"pretrain/configs/{'sl_imagenet_r50' if gpu else 'sl_cpu'}.yaml"
    args.config = load_config(config_path, ["data.image_size=32", "data.workers=0"] if args.quick else [])
    args.arch, args.image_size = args.config.model.arch, args.config.data.image_size
    args.batch = args.batch or (8 if args.quick else 256 if gpu else 32)
    args.amp = choose_precision(args.config.train.amp, device)
    args.channels_last = on_off(args.config.train.channels_last, device, "train.channels_last")
    args.num_classes, args.slots = 1000, IMAGENET_TRAIN_IMAGES
    args.look = {"k": 50, "temperature": 0.1, "embed_dim": 128}
    args.warmup, args.rounds, args.steps = (1, 2, 1) if args.quick else (3, 5, 3) if gpu else (2, 3, 2)
    args.data_batches = 2 if args.quick else 20
    args.bench_iters = 2 if args.quick else 20

    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m benchmarks.commands.gpu_check", *given])
    sections = [("environment", environment(device))]
    step_rows, sl_rate = pretraining(args, device)
    sections.append((f"pretraining step: {args.arch}, {args.image_size} px, batch {args.batch}, amp {args.amp}, "
                     f"channels_last {'on' if args.channels_last else 'off'} (median of {args.rounds} interleaved "
                     f"rounds)", step_rows))
    sections.append(("data pipeline", data_pipeline(args, device, sl_rate)))
    sections.append(("benchmarks", [("benchmark iterations", "left out (--no-benchmarks)")] if args.no_benchmarks
                     else benchmark_smokes(args, device)))
    where = dict(sections[0][1])["card"]
    header = (f"# GPU check: {where}\n\n`{command}` on {time.strftime('%Y-%m-%d')}, config {config_path}. "
              "Printed figures, not asserted; targets are for a GPU.")
    table = markdown(sections, header)
    print(table)
    atomic_write_text(args.out, table)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
