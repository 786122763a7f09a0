#!/usr/bin/env bash
# Sourced by quickstart.sh and test.sh: makes .venv once, installs torch (CPU build) first, then the package.
# TORCH_SPEC overrides the torch requirement (e.g. a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.reptiledistil-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q --upgrade pip
  # torch first: an unpinned torch pulled in by another package would be a multi-GB CUDA build.
  python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
  python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
# Offline by default: the MiniLM preset and GLUE TSVs need no network (unset these to use the hub).
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
export WANDB_MODE="${WANDB_MODE:-offline}" TOKENIZERS_PARALLELISM=false
