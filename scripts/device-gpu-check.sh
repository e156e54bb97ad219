#!/usr/bin/env bash
# GPU check for a session lent a device machine (it has python3.12 + torch but no network).
# Prepare here first (wheels for py3.12 in .device/wheels, git-excluded, carried with the run):
#   mkdir -p .device/wheels && echo /.device/ >> .git/info/exclude
#   .venv/bin/pip download -d .device/wheels --python-version 3.12 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --only-binary=:all: pydantic sqlalchemy \
#     alembic fastapi uvicorn optuna pathspec typer rich httpx psutil pyyaml nvidia-ml-py
#   .venv/bin/pip wheel --no-deps -w .device/wheels .
# then: device run `bash scripts/device-gpu-check.sh` with carry [".device"].
# One short GPU check: NVML discovery, real CUDA_VISIBLE_DEVICES isolation with torch, GPU fail-fast; then
# usage accounting with the real NVML reader (engines/gpus.py): a busy job's utilisation shows in top and
# /metrics, and a job holding GPU 0 idle gets the IdleGPU event and top's IDLE-GPU mark.  Exits non-zero
# with a message when the usage part fails.
set -u
exec > >(tee "$OUT/log.txt") 2>&1
python3 --version; nvidia-smi -L
python3 -m venv --system-site-packages /tmp/v
/tmp/v/bin/pip install -q --no-index --find-links .device/wheels kubetrain || exit 1
export KUBETRAIN_HOME=/tmp/kth PATH=/tmp/v/bin:$PATH KUBETRAIN_GRACE_SECONDS=2
# Usage accounting (issue 13): sample every 2 s, call a GPU idle after 20 s below 5 %.
export KUBETRAIN_SAMPLE_SECONDS=2 KUBETRAIN_IDLE_GPU_SECONDS=20
mkdir -p /tmp/work
kubetrain nodes
GPU='import os, torch; print("CVD=%r available=%s count=%d" % (os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.is_available(), torch.cuda.device_count())); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no gpu"); x = torch.randn(4096, 4096, device="cuda") if torch.cuda.is_available() else None; print("matmul ok", float((x @ x).abs().sum()) > 0 if x is not None else "-")'
kubetrain run --name gpu1 --gpu 1 --cpu 2 --memory 24Gi --no-snapshot -w /tmp/work --wait -- python3 -c "$GPU"
kubetrain run --name gpu0 --gpu 0 --cpu 2 --memory 24Gi --no-snapshot -w /tmp/work --wait -- python3 -c "$GPU"
kubetrain run --name gpu2 --gpu 2 --no-snapshot -w /tmp/work --wait -- true
for j in gpu1 gpu0 gpu2; do echo "== $j"; kubetrain describe $j | sed -n '2,3p;/Attempts/,$p'; kubetrain logs $j; done

fail() { echo "DEVICE CHECK FAILED: $*"; kubetrain server stop; exit 1; }
field() { python3 -c "import json,sys; rows=[r for r in json.load(sys.stdin) if r['job']=='$1']; print(rows[0].get('$2') if rows else 'none')"; }
echo "== usage: a busy GPU job"
BUSY='import torch, time; x = torch.randn(8192, 8192, device="cuda"); t = time.time()
while time.time() - t < 40: x = (x @ x).clamp_(-1, 1)
torch.cuda.synchronize()'
kubetrain run --name busy --gpu 1 --cpu 2 --memory 24Gi --no-snapshot -w /tmp/work -- python3 -c "$BUSY"
util=none
for _ in $(seq 30); do
  util=$(kubetrain top -o json | field busy gpu_utilization); case $util in none|None) sleep 1;; *) break;; esac
done
echo "busy job's GPU utilisation in top: $util"
python3 -c "import sys; sys.exit(0 if float('$util') > 20 else 1)" 2>/dev/null || fail "top shows no real utilisation for the busy job ($util)"
kubetrain top
curl -sf -H "Authorization: Bearer $(cat $KUBETRAIN_HOME/run/token 2>/dev/null)" "$(python3 -c "import json; print(json.load(open('$KUBETRAIN_HOME/run/master.json'))['url'])")/metrics" | grep -E '^kubetrain_(job_gpu_utilization|node_used)' || echo "(no /metrics over curl: token file elsewhere; top is the check)"
kubetrain run --name busy-wait --no-snapshot --wait -- true >/dev/null  # lets the loop catch up
kubetrain describe busy -o json | grep -q '"IdleGPU"' && fail "the busy job got an IdleGPU event"
kubetrain cancel busy >/dev/null
echo "== usage: a job holding GPU 0 idle"
IDLE='import torch, time; x = torch.ones(1 << 28, device="cuda"); torch.cuda.synchronize(); time.sleep(90)'
kubetrain run --name idle --gpu 1 --cpu 2 --memory 24Gi --no-snapshot -w /tmp/work -- python3 -c "$IDLE"
ok=
for _ in $(seq 60); do
  if kubetrain describe idle -o json | grep -q '"IdleGPU"'; then ok=1; break; fi; sleep 2
done
[ -n "$ok" ] || fail "no IdleGPU event within 120 s for a job holding a GPU idle"
kubetrain top
kubetrain top | grep '^idle' | grep -q 'IDLE-GPU' || fail "kubetrain top does not mark the idle job"
kubetrain describe idle | sed -n '/Attempts/,$p'
kubetrain describe idle | grep -q 'usage #1: .*gpu 0 avg' || fail "describe shows no per-GPU usage"
kubetrain cancel idle >/dev/null
echo "DEVICE CHECK PASSED: usage accounting and the IdleGPU warning on a real GPU"
kubetrain server stop
