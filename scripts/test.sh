#!/usr/bin/env bash
# Fresh machine -> tests: install pst-yolo with its dev, export and edge extras into .venv, then run the whole suite
# (CPU, offline). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh" dev,export,edge
exec "$PST_VENV/bin/python" -m pytest "$@"
