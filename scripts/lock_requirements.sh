#!/usr/bin/env bash
# Regenerate requirements.lock, the exact versions `make setup`, CI and infra/Dockerfile install with
# (as pip constraints: pip install -c requirements.lock -e '.[dev]'). pyproject.toml keeps the ranges.
# Refresh: update the venv (make setup, then pip install -U what you want newer), run the tests, then
#   bash scripts/lock_requirements.sh            # writes requirements.lock from .venv
# and commit pyproject.toml and requirements.lock together.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${VENV:-.venv}/bin/python"
{
  echo "# Exact versions of a tested environment; install with: pip install -c requirements.lock -e '.[dev]'"
  echo "# Regenerate with scripts/lock_requirements.sh (ranges live in pyproject.toml)."
  # --exclude-editable drops mmrag itself; a package installed from a local file or URL is pinned by name.
  "$PY" -m pip freeze --exclude-editable \
    | sed -E 's/^([A-Za-z0-9_.-]+) @ file:.*\/[A-Za-z0-9_.]+-([0-9][^-]*)-.*$/\1==\2/' \
    | sed -E 's/^([A-Za-z0-9_.-]+)==/\L\1==/' \
    | grep -v -E '^(pip|setuptools|wheel)==' \
    | sort
} > requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
