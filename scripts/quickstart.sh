#!/usr/bin/env bash
# Install imsim and run the main job on the embedded default (a Milvus Lite store, no servers):
# ingest the bundled sample images with CLIP and DINOv2, list the collections, search, compare.
#
# The store lives in imsim's data dir (~/.imsim, or IMSIM_DATA_DIR). When the model hub cannot be reached,
# tiny random-weight models of the same architectures are built instead and their paths written to imsim's
# env file (~/.imsim/imsim.env, or IMSIM_ENV_FILE), which imsim reads in every shell: the README's next
# commands work in a new shell without exporting anything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate

# Decided once and fast (a few seconds at most; HF_HUB_OFFLINE=1 is honoured without a network probe).
if ! python -c "import sys; from imsim.models.torch_base import hub_reachable; sys.exit(0 if hub_reachable() else 1)" 2>/dev/null; then
  python - <<'PY'
import os
from pathlib import Path

from imsim.models.testing import build_tiny_models
from imsim.settings import get_settings

settings = get_settings()
dirs = build_tiny_models(settings.data_dir / "offline-models")
env_file = settings.env_file
lines = [line for line in (env_file.read_text().splitlines() if env_file.is_file() else [])
         if not line.startswith(("IMSIM_CLIP_MODEL=", "IMSIM_DINOV2_MODEL=", "IMSIM_DATA_DIR="))]
lines += [f"IMSIM_CLIP_MODEL={dirs['clip']}", f"IMSIM_DINOV2_MODEL={dirs['dinov2']}"]
if os.environ.get("IMSIM_DATA_DIR"):
    lines.append(f"IMSIM_DATA_DIR={settings.data_dir}")
env_file.parent.mkdir(parents=True, exist_ok=True)
env_file.write_text("# written by scripts/quickstart.sh: the model hub was unreachable (delete these lines to use it)\n"
                    + "\n".join(line for line in lines if not line.startswith("# written by")) + "\n")
print(f"!! the model hub is unreachable: using tiny RANDOM-WEIGHT CLIP/DINOv2 models (a demo of the pipeline; "
      f"their similarities mean nothing). Their paths are in {env_file}, read by imsim in every shell.")
PY
fi

imsim ingest --local samples/
imsim collections
imsim search samples/photos/chelsea.jpg -k 5
imsim compare samples/photos/chelsea.jpg samples/photos/coffee.jpg
echo "next: in any shell, \`. .venv/bin/activate\` and the README's commands (\`imsim config\` shows the settings in use)"
