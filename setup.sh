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
  # the test extra brings the export and serve extras (onnx, onnxruntime, FastAPI): fail here if they did not install
  "$VENV/bin/python" -c "import cnnlab, pytest, onnx, onnxscript, onnxruntime, fastapi, uvicorn, python_multipart" >/dev/null
  # tests/test_serve.py drives the web page in a headless Chromium and is skipped without one. CI (CI=true) installs
  # Debian's package when it can (root and apt-get; about a minute); elsewhere CNNLAB_INSTALL_BROWSER=1 asks for it.
  if { [ "${CI:-}" = "true" ] || [ "${CNNLAB_INSTALL_BROWSER:-}" = "1" ]; } && ! command -v chromium >/dev/null \
      && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing chromium (apt-get) for the browser test ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "could not install chromium: the browser test will be skipped"
  fi
  shift
  exec "$VENV/bin/python" -m pytest "$@"
fi
pip_install -e .
"$VENV/bin/python" -c "import cnnlab" >/dev/null
exec "$VENV/bin/cnnlab" train "$@"
