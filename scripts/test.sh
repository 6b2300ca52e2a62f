#!/usr/bin/env bash
# Install everything the tests need (see install.sh --test) and run them. CI runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
. .venv/bin/activate
exec python -m pytest -q "$@"
