#!/usr/bin/env bash
# cnnlab set-up in one command, into a project-local virtual environment (.venv).
#   ./setup.sh        install everything, then train the default model on the built-in digits data
#   ./setup.sh test   install the test extras too, then run the whole test suite
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0, the CPU build here);
# it is only installed when the environment has no torch yet, so pip never pulls a CUDA build by accident.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "installing ${TORCH_SPEC:-torch==2.13.0} ..."
  pip_install "${TORCH_SPEC:-torch==2.13.0}"
fi
if [ "${1:-}" = "test" ]; then
  pip_install -e ".[test]"
  "$VENV/bin/python" -c "import cnnlab, pytest" >/dev/null
  shift
  exec "$VENV/bin/python" -m pytest "$@"
fi
pip_install -e .
"$VENV/bin/python" -c "import cnnlab" >/dev/null
exec "$VENV/bin/cnnlab" train "$@"
