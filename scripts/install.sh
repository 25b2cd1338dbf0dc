#!/usr/bin/env bash
# Builds .venv with the whole pinned stack; docs/install.md says why each step is as it is.
# Idempotent: `make install` runs it only when the stamp is older than this script or requirements.txt.
# pip runs with the user's own configuration (index mirrors, proxies, certificates).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/build_jobs.sh
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
D2_WHEEL_SHA256=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
have() { "$VENV/bin/python" - "$@" <<'PYEOF'
import importlib.metadata as m, sys
name, version = sys.argv[1], sys.argv[2]
try:
    sys.exit(0 if m.version(name).startswith(version) else 1)
except m.PackageNotFoundError:
    sys.exit(1)
PYEOF
}

# mmcv's setup.py needs pkg_resources (setuptools<81) and is built without isolation.
pip install -q "setuptools<81" wheel ninja packaging

# PyPI's torch 2.13.0 (a CUDA build, which also runs on a CPU): PyPI's torchvision 0.28.0 is built against it.
# A CPU-only build (+cpu, as a PyTorch index or a local wheel folder may offer) lacks torchvision's ops.
have torch 2.13.0+cu || pip install -q "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0"

pip install -q -r requirements.txt

# detectron2 (its authors publish no wheel): sal-detectron2, a republish of upstream's Python code, tagged cp310;
# its Python is version-independent, so the wheel is renamed for pip to accept it on 3.11+. Pinned by sha256.
if ! have sal-detectron2 0.7.2; then
  tmp=$(mktemp -d)
  pip download -q --no-deps --only-binary :all: --python-version 3.10 sal-detectron2==0.7.2 -d "$tmp"
  echo "$D2_WHEEL_SHA256  $tmp/sal_detectron2-0.7.2-cp310-none-any.whl" | sha256sum -c --quiet
  mv "$tmp/sal_detectron2-0.7.2-cp310-none-any.whl" "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
  pip install -q --no-deps "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
  rm -rf "$tmp"
fi
# Its compiled extension is built for CPython 3.10 and cannot load on 3.11+; nothing this suite runs needs it
# (Mask R-CNN, Faster R-CNN C4 and COCO evaluation run without it: pycocotools scores COCO).
rm -f "$VENV"/lib/python3*/site-packages/detectron2/_C.cpython-310-*.so

pip install -q --no-deps -e .

# mmcv 2.1.0 with its compiled ops, last because it is slow (CPU ops: about 30 min on one core, then
# served from pip's wheel cache). With CUDA kernels (RoIAlign, NMS, ... on GPU tensors) when torch sees a
# GPU, or when MMCV_CUDA=1 (MMCV_CUDA=0: never); see scripts/build_mmcv_cuda.sh.
MMCV_CUDA=${MMCV_CUDA:-auto}
if [ "$MMCV_CUDA" = auto ]; then
  MMCV_CUDA=$("$VENV/bin/python" -c "import torch; print(int(torch.cuda.is_available()))")
fi
mmcv_cuda_built() {
  "$VENV/bin/python" -c "from mmcv.ops import get_compiling_cuda_version as v; import sys; \
sys.exit(v() == 'not available')" 2>/dev/null
}
if [ "$MMCV_CUDA" = 1 ]; then
  have mmcv 2.1.0 && mmcv_cuda_built || VENV="$VENV" bash scripts/build_mmcv_cuda.sh
else
  # (a wheel in pip's cache installs in seconds; the jobs matter only for a first build)
  have mmcv 2.1.0 || MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$(build_jobs 2 "mmcv CPU ops") \
    pip install --no-build-isolation mmcv==2.1.0
fi

"$VENV/bin/python" -c "import torch, torchvision, timm, detectron2, mmcv, mmdet, mmseg, pycocotools; \
from mmcv.ops import nms, get_compiling_cuda_version as cuda; \
print('stack ok: torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmcv CUDA ops:', cuda())"
