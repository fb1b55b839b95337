#!/usr/bin/env bash
# Create (once) a virtual environment and install pst-yolo into it, as a new user would.
# Usage: source scripts/setup_env.sh [EXTRAS]   e.g. EXTRAS="dev,export". Venv: $PST_VENV (default .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PST_VENV=${PST_VENV:-.venv}
[ -x "$PST_VENV/bin/python" ] || python3 -m venv "$PST_VENV"
PST_VENV=$(cd "$PST_VENV" && pwd)  # absolute
"$PST_VENV/bin/python" -m pip install -q --upgrade pip
# torch/torchvision come from the registry (the CUDA build also runs on a CPU-only machine)
"$PST_VENV/bin/python" -m pip install -q -e ".${1:+[$1]}"
export PATH="$PST_VENV/bin:$PATH"
