#!/usr/bin/env bash
# The demo: train the digits example through a kubetrain master on the embedded engine.
# Creates its own virtual environment (.venv) and its own KUBETRAIN_HOME (.kubetrain-demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh examples
export KUBETRAIN_HOME=${KUBETRAIN_HOME:-$PWD/.kubetrain-demo}
if [ "$(id -u)" = 0 ]; then
  # A master never runs jobs as root unless its admin says so. A one-person demo run as root (a fresh VM or
  # container) says so; a master shared by a team keeps it off and runs each job as its submitter.
  export KUBETRAIN_ALLOW_ROOT_JOBS=1
fi
export PATH="$PWD/.venv/bin:$PATH"

echo "== kubetrain nodes"
kubetrain nodes
echo
echo "== kubetrain submit -f examples/digits/job.yaml"
name=$(kubetrain submit -f examples/digits/job.yaml -o json | python -c 'import json,sys; print(json.load(sys.stdin)[0]["name"])')
echo "submitted job/$name"
echo
echo "== kubetrain logs -f $name"
kubetrain logs -f "$name"
echo
echo "== kubetrain describe $name"
kubetrain describe "$name"
state=$(kubetrain describe "$name" -o json | python -c 'import json,sys; print(json.load(sys.stdin)["state"])')
echo
echo "== kubetrain artifacts $name"
kubetrain artifacts "$name"
out="$KUBETRAIN_HOME/volumes/results/$name"
echo
echo "job $name: $state"
echo "model:   $out/model.pkl"
echo "metrics: $out/metrics.json"
echo "(or through the master from anywhere: kubetrain cp $name:model.pkl .)"
test -f "$out/model.pkl" && test -f "$out/metrics.json"
echo "(the master keeps running in the background; stop it with: KUBETRAIN_HOME=$KUBETRAIN_HOME .venv/bin/kubetrain server stop)"
[ "$state" = Succeeded ]
