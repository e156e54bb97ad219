# Sourced by demo.sh and test.sh: create .venv on first use and install the project with the given extras.
# Usage: . scripts/venv.sh EXTRAS
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e ".[$1]"
