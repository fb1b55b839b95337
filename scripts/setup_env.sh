#!/usr/bin/env bash
# Create (once) a virtual environment and install pst-yolo into it, as a new user would.
# Usage: source scripts/setup_env.sh [EXTRAS]   e.g. EXTRAS="dev,export". Venv: $PST_VENV (default .venv).
# A new venv needs $PST_MIN_FREE_GB (default 8) GB free on its disk; the script stops with a message otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PST_VENV=${PST_VENV:-.venv}
if [ ! -x "$PST_VENV/bin/python" ]; then
  # a new environment takes ~7 GB (PyTorch's wheel is a CUDA build even on a CPU-only machine; measured: 7.2 GB with
  # the dev,export,edge extras): fail before pip does, naming the folder and the way out, instead of a full disk midway
  on=$(dirname "$PST_VENV"); while [ ! -d "$on" ]; do on=$(dirname "$on"); done  # the folder's disk, creating nothing
  need_gb=${PST_MIN_FREE_GB:-8}
  free_gb=$(df -Pk "$on" | awk 'NR == 2 {print int($4 / 1048576)}')
  if [ "$free_gb" -lt "$need_gb" ]; then
    echo "pst-yolo: a new environment ($PST_VENV) needs about ${need_gb} GB free; its disk ($(cd "$on" && pwd)) has" \
      "${free_gb} GB. Free some space, or put the environment on a larger disk: PST_VENV=/larger/disk/venv" >&2
    return 1 2>/dev/null || exit 1
  fi
  python3 -m venv "$PST_VENV"
fi
PST_VENV=$(cd "$PST_VENV" && pwd)  # absolute
"$PST_VENV/bin/python" -m pip install -q --upgrade pip
# torch/torchvision come from the registry (the CUDA build also runs on a CPU-only machine)
"$PST_VENV/bin/python" -m pip install -q -e ".${1:+[$1]}"
export PATH="$PST_VENV/bin:$PATH"
