#!/usr/bin/env bash
# Install everything the tests need (see install.sh --test), check lint, formatting and types, run the tests.
# CI runs this. Arguments go to pytest: `bash scripts/test.sh -m "not integration"` is the fast unit tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
. .venv/bin/activate
echo "== ruff check" >&2 && ruff check .
echo "== ruff format --check" >&2 && ruff format --check .
echo "== mypy (imsim and workers with every def typed; tests, benchmarks)" >&2 && mypy
echo "== import-linter (the layering of docs/architecture.md)" >&2 && lint-imports --no-cache
exec python -m pytest -q -n "${IMSIM_TEST_WORKERS:-3}" --dist loadfile --no-loadscope-reorder "$@"
