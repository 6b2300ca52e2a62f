#!/usr/bin/env bash
# Install imsim and run the main job on the embedded default (a Milvus Lite file, no servers):
# ingest the bundled sample images with CLIP and DINOv2, list the collections, search.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export IMSIM_DATA_DIR=${IMSIM_DATA_DIR:-$PWD/imsim_data}

# The published models come from the Hugging Face hub. Where the hub cannot be reached (an
# offline machine), build tiny random-weight models of the same architectures instead, so the
# pipeline still runs end to end -- their similarities are meaningless, and we say so.
if ! python - <<'PY' 2>/dev/null
import os, sys
from huggingface_hub import hf_hub_download
for repo in ("openai/clip-vit-base-patch32", "facebook/dinov2-base"):
    hf_hub_download(repo, "config.json", etag_timeout=10)
PY
then
  echo "!! the model hub is unreachable: using tiny RANDOM-WEIGHT CLIP/DINOv2 models (demo of the pipeline only)" >&2
  python -c "from imsim.models.testing import build_tiny_models; build_tiny_models('$IMSIM_DATA_DIR/offline-models')"
  export IMSIM_CLIP_MODEL=$IMSIM_DATA_DIR/offline-models/tiny-clip IMSIM_DINOV2_MODEL=$IMSIM_DATA_DIR/offline-models/tiny-dinov2
fi

imsim ingest --local samples/
imsim collections
imsim search samples/photos/chelsea.jpg -k 5
imsim compare samples/photos/chelsea.jpg samples/photos/coffee.jpg
