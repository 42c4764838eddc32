#!/usr/bin/env bash
# Set up a virtual environment in .venv and run the test suite (CPU only, a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet -r requirements.txt -r requirements-test.txt
KERAS_BACKEND=torch .venv/bin/python -m pytest tests "$@"
