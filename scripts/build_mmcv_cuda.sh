#!/usr/bin/env bash
# Builds mmcv 2.1.0 with its CUDA kernels against the venv's torch and installs it. No GPU is needed to
# compile. Run by scripts/install.sh when torch sees a GPU or MMCV_CUDA=1; alone:
#   VENV=.venv bash scripts/build_mmcv_cuda.sh [--check]     (--check: compile the Mask R-CNN ops only)
# The CUDA compiler must match torch's CUDA (13.0 for torch 2.13.0+cu130): the system's nvcc when its
# version matches, else NVIDIA's PyPI packages of that exact release (pinned below: nvidia-cuda-nvcc alone
# pulls nvvm/crt 13.5, whose PTX the 13.0 ptxas rejects).
# MMCV_NVCC=pypi skips any system CUDA and takes the PyPI packages.
# TORCH_CUDA_ARCH_LIST: the visible GPUs' compute capabilities, else "8.0;9.0" (A100, H100); set it
# yourself for other cards. Each architecture adds to the compile time (17 min for one on 2 cores).
# Compile jobs: the machine's cores, bounded by available memory at 4 GB a job (scripts/build_jobs.sh);
# MAX_JOBS=N overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(readlink -f "${VENV:-.venv}")
PY="$VENV/bin/python"
pip() {
  "$PY" -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
}
fail() { echo "error: mmcv CUDA build: $*" >&2; exit 2; }
source scripts/build_jobs.sh

torch_cuda=$("$PY" -c "import torch; print(torch.version.cuda or '')")
[ -n "$torch_cuda" ] || fail "torch $("$PY" -c 'import torch; print(torch.__version__)') is a CPU-only build"
declare -A PYPI_NVCC=(
  [13.0]="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88"
)

nvcc_release() { "$1" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p'; }
# a CUDA home: bin/nvcc of torch's CUDA release and the runtime headers beside it
cuda_home=""
on_path=$(command -v nvcc 2>/dev/null || true)
candidates=("${CUDA_HOME:-}" /usr/local/cuda "${on_path:+$(dirname "$(dirname "$(readlink -f "$on_path")")")}")
[ "${MMCV_NVCC:-auto}" = pypi ] && candidates=()
for candidate in "${candidates[@]}"; do
  if [ -n "$candidate" ] && [ -x "$candidate/bin/nvcc" ] && [ -f "$candidate/include/cuda_runtime.h" ] \
      && [ "$(nvcc_release "$candidate/bin/nvcc")" = "$torch_cuda" ]; then
    cuda_home=$(readlink -f "$candidate")
    break
  fi
done
if [ -z "$cuda_home" ]; then
  packages=${PYPI_NVCC[$torch_cuda]:-}
  [ -n "$packages" ] || fail "no nvcc $torch_cuda found (CUDA_HOME, PATH, /usr/local/cuda) and no known PyPI \
compiler packages for CUDA $torch_cuda; install the CUDA $torch_cuda toolkit and set CUDA_HOME"
  echo "installing the CUDA $torch_cuda compiler from PyPI: $packages"
  # shellcheck disable=SC2086
  pip install -q $packages
  cuda_home=$("$PY" -c "import nvidia, os; print(os.path.join(nvidia.__path__[0], 'cu${torch_cuda%%.*}'))")
  # torch's extension builder links -L$CUDA_HOME/lib64 -lcudart
  [ -e "$cuda_home/lib64" ] || ln -s lib "$cuda_home/lib64"
  [ -e "$cuda_home/lib/libcudart.so" ] || ln -s "libcudart.so.${torch_cuda%%.*}" "$cuda_home/lib/libcudart.so"
fi
export CUDA_HOME=$cuda_home PATH="$cuda_home/bin:$PATH"
# torch's CUDA headers include library headers (cusparse.h, cublas_v2.h ...) that a compiler-only CUDA home
# lacks; torch's own CUDA wheels carry them, for exactly torch's release: search them after CUDA_HOME.
nvidia_include=$("$PY" -c "import glob, os, nvidia; \
print(' '.join(sorted(glob.glob(os.path.join(nvidia.__path__[0], '*', 'include')))))" 2>/dev/null || true)
for dir in $nvidia_include; do
  export CPATH="${CPATH:+$CPATH:}$dir"                             # g++ (cudabind.cpp and the other host code)
  export MMCV_CUDA_ARGS="${MMCV_CUDA_ARGS:+$MMCV_CUDA_ARGS }-I$dir"  # nvcc, through mmcv's setup.py
done
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print(';'.join(sorted({'%d.%d' % torch.cuda.get_device_capability(i) \
for i in range(torch.cuda.device_count())})) or '8.0;9.0')")
fi
export TORCH_CUDA_ARCH_LIST
echo "nvcc: $CUDA_HOME/bin/nvcc ($(nvcc_release "$CUDA_HOME/bin/nvcc")), architectures: $TORCH_CUDA_ARCH_LIST"

src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
PIP_CONFIG_FILE=/dev/null pip download -q --no-deps --no-binary :all: mmcv==2.1.0 -d "$src"
tar -xzf "$src"/mmcv-2.1.0.tar.gz -C "$src"
cd "$src/mmcv-2.1.0"
if [ "${1:-}" = --check ]; then
  # The kernels Mask R-CNN uses (RoIAlign, NMS) and the file that binds every CUDA op, compiled with
  # mmcv's own flags; no library is linked or installed.
  torch_inc=$("$PY" -c "import torch.utils.cpp_extension as e; print(' '.join('-I' + p for p in e.include_paths()))")
  flags="-std=c++17 -DMMCV_WITH_CUDA -Immcv/ops/csrc/common -Immcv/ops/csrc/common/cuda $torch_inc \
-I$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  arch=$(echo "$TORCH_CUDA_ARCH_LIST" | cut -d';' -f1 | tr -d .)
  torch_nvcc=$("$PY" -c "import torch.utils.cpp_extension as e; print(' '.join(e.COMMON_NVCC_FLAGS))")
  for source in mmcv/ops/csrc/pytorch/cuda/roi_align_cuda.cu mmcv/ops/csrc/pytorch/cuda/nms_cuda.cu; do
    start=$(date +%s)
    # shellcheck disable=SC2086
    nvcc $flags $torch_nvcc ${MMCV_CUDA_ARGS:-} -gencode "arch=compute_$arch,code=sm_$arch" --expt-relaxed-constexpr -Xcompiler -fPIC \
      -c "$source" -o "$src/$(basename "$source").o"
    echo "compiled $source for sm_$arch in $(( $(date +%s) - start )) s"
  done
  start=$(date +%s)
  # shellcheck disable=SC2086
  g++ $flags -I"$CUDA_HOME/include" -fPIC -c mmcv/ops/csrc/pytorch/cuda/cudabind.cpp -o "$src/cudabind.o"
  echo "compiled mmcv/ops/csrc/pytorch/cuda/cudabind.cpp in $(( $(date +%s) - start )) s"
  exit 0
fi
MMCV_WITH_OPS=1 FORCE_CUDA=1 MAX_JOBS=$(build_jobs 4 "mmcv CUDA ops") "$PY" -m pip --disable-pip-version-check install \
  --no-build-isolation --no-cache-dir --force-reinstall --no-deps .
"$PY" -c "from mmcv.ops import get_compiling_cuda_version as v; assert v() != 'not available', v(); \
print('mmcv built with CUDA', v())"
