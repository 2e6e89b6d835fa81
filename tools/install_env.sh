#!/usr/bin/env bash
# Install the OpenMMLab stack that mmvitmix needs, on a fresh machine or an existing one.
# Idempotent: each step is skipped when the pinned version is already importable.
# Recipe and traps: docs/get_started.md.
set -euo pipefail
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."

have() {  # have <module> <version>: true when the module imports and reports that version
  "$PY" - "$1" "$2" <<'PYEOF' 2>/dev/null
import importlib, sys
mod, want = sys.argv[1], sys.argv[2]
m = importlib.import_module(mod)
v = getattr(m, '__version__', '')
sys.exit(0 if v.split('+')[0] == want else 1)
PYEOF
}
pipi() { "$PY" -m pip install --progress-bar off "$@"; }
step() { echo "[install_env] $*"; }

# 1. torch: the registry's default (CUDA) build. The CPU-only wheel that local find-links offers
#    has no matching torchvision, and mmpretrain needs torchvision.ops.
if have torch 2.13.0 && have torchvision 0.28.0 && "$PY" -c "import torchvision.ops" 2>/dev/null; then
  step "torch 2.13.0 + torchvision 0.28.0 present"
else
  step "installing torch 2.13.0 (CUDA build, runs on CPU) + torchvision 0.28.0"
  pipi "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0"
fi

# 2. build tools for mmcv: its setup.py imports pkg_resources (gone in setuptools>=81).
if "$PY" -c "import setuptools,sys; v=tuple(int(x) for x in setuptools.__version__.split('.')[:2]); sys.exit(0 if (77,0)<=v<(81,0) else 1)" \
   && "$PY" -c "import ninja, wheel" 2>/dev/null; then
  step "setuptools/ninja/wheel present"
else
  pipi "setuptools>=77,<81" ninja wheel
fi

# 3. mmengine
have mmengine 0.10.7 || pipi mmengine==0.10.7

# 4. mmcv 2.1.0 compiled with its ops (no wheel exists for this torch); ~9 min on 2 cores.
if have mmcv 2.1.0 && "$PY" -c "import mmcv.ops" 2>/dev/null; then
  step "mmcv 2.1.0 with ops present"
else
  step "compiling mmcv 2.1.0 with ops (about 10 minutes on 2 cores)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} pipi --no-build-isolation --no-cache-dir mmcv==2.1.0
fi

# 5. downstream toolboxes and test tools
have mmdet 3.3.0 || pipi mmdet==3.3.0
have mmseg 1.2.2 || pipi mmsegmentation==1.2.2
have mmpretrain 1.2.0 || pipi mmpretrain==1.2.0
"$PY" -c "import pycocotools, pytest, ftfy, regex" 2>/dev/null || pipi pycocotools pytest ftfy regex
# ONNX export and its check in onnxruntime (tools/deploy/export_onnx.py): pinned, as the exporter's
# graph and onnxruntime's kernels decide the numbers (versions tested: docs/deploy.md)
if have onnx 1.23.2 && have onnxscript 0.7.2 && have onnxruntime 1.32.0; then
  step "onnx 1.23.2, onnxscript 0.7.2, onnxruntime 1.32.0 present"
else
  pipi onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0
fi

# 5b. openmim 0.3.9 (`mim train/test/search mmvitmix`), without its opendatalab dependency
#     (opendatalab -> openxlab pins setuptools==60.2.0 and requests==2.28.2; see requirements/mim.txt)
if "$PY" -c "import mim.version, modelindex, pandas, tabulate, sys; sys.exit(0 if mim.version.__version__ == '0.3.9' else 1)" 2>/dev/null; then
  step "openmim 0.3.9 present"
else
  pipi -r requirements/mim.txt
  pipi --no-deps openmim==0.3.9
fi

# 6. this package, editable (builds its compiled ops when their sources are present: the CPU
#    kernels always, the CUDA kernels too where nvcc exists, for sm_80/sm_90; minutes on 2 cores).
#    The check runs outside the repository, where only an installed mmvitmix can be imported,
#    and also needs the compiled ops (mmvitmix._ext) to import, so a fresh clone builds them.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  export FORCE_CUDA=${FORCE_CUDA:-1}
fi
#    setup.py also makes mmvitmix/.mim (links to configs/, tools/, model-index.yml), where mim looks.
REPO=$(pwd)
# mim 0.3.9 looks for a package at <site-packages>/<name>, where a PEP 660 editable install
# leaves only an import hook: a link there to this checkout's package lets `mim train mmvitmix`
# find mmvitmix/.mim/tools/train.py. Re-pointed on every run (a link only; an installed copy is left alone).
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ -L "$SITE/mmvitmix" ] || [ ! -e "$SITE/mmvitmix" ]; then ln -sfn "$REPO/mmvitmix" "$SITE/mmvitmix"; fi
if (cd / && "$PY" -c "import torch, mmvitmix, mmvitmix._ext, pathlib, sys, importlib.metadata as m; m.distribution('mmvitmix'); sys.exit(0 if pathlib.Path(mmvitmix.__file__).resolve().parent == pathlib.Path('$REPO/mmvitmix').resolve() else 1)") 2>/dev/null \
   && [ -e mmvitmix/.mim/model-index.yml ] && [ -z "${MMVITMIX_REINSTALL:-}" ]; then
  step "mmvitmix (editable, with its compiled ops) present"
else
  step "installing mmvitmix (editable) and compiling its ops"
  # --use-pep517: without a pyproject.toml pip would take the legacy `setup.py develop`
  # route, which setuptools >= 80 hands to an isolated build without torch (no ops)
  #    (MMVITMIX_BUILD_OPS=0 reinstalls without recompiling, keeping an mmvitmix/_ext*.so already built)
  MAX_JOBS=${MAX_JOBS:-2} pipi --no-build-isolation --no-deps --use-pep517 -e .
  (cd / && "$PY" -c "import torch, mmvitmix._ext") \
    || { echo "[install_env] mmvitmix._ext did not build; see the compiler output above" >&2; exit 1; }
fi
step "done"
