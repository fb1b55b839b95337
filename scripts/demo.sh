#!/usr/bin/env bash
# Fresh machine -> demo: install pst-yolo into .venv, then train yolo11n-pst on the offline shapes dataset (CPU,
# about 10 minutes) and compare fine attention off/on. Extra key=value arguments go to `pst-yolo demo`.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh" ""  # no extras (an explicit arg: a sourced script would see ours)
exec "$PST_VENV/bin/pst-yolo" demo "$@"
