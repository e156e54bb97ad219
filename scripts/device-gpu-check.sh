#!/usr/bin/env bash
# GPU check for a session lent a device machine (it has python3.12 + torch but no network).
# Prepare here first (wheels for py3.12 in .device/wheels, git-excluded, carried with the run):
#   mkdir -p .device/wheels && echo /.device/ >> .git/info/exclude
#   .venv/bin/pip download -d .device/wheels --python-version 3.12 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --only-binary=:all: pydantic sqlalchemy \
#     alembic fastapi uvicorn optuna pathspec typer rich httpx psutil pyyaml nvidia-ml-py
#   .venv/bin/pip wheel --no-deps -w .device/wheels .
# then: device run `bash scripts/device-gpu-check.sh` with carry [".device"].
# One short GPU check: NVML discovery, real CUDA_VISIBLE_DEVICES isolation with torch, GPU fail-fast.
set -u
exec > >(tee "$OUT/log.txt") 2>&1
python3 --version; nvidia-smi -L
python3 -m venv --system-site-packages /tmp/v
/tmp/v/bin/pip install -q --no-index --find-links .device/wheels kubetrain || exit 1
export KUBETRAIN_HOME=/tmp/kth PATH=/tmp/v/bin:$PATH KUBETRAIN_GRACE_SECONDS=2
mkdir -p /tmp/work
kubetrain nodes
GPU='import os, torch; print("CVD=%r available=%s count=%d" % (os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.is_available(), torch.cuda.device_count())); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no gpu"); x = torch.randn(4096, 4096, device="cuda") if torch.cuda.is_available() else None; print("matmul ok", float((x @ x).abs().sum()) > 0 if x is not None else "-")'
kubetrain run --name gpu1 --gpu 1 --cpu 2 --memory 24Gi --no-snapshot -w /tmp/work --wait -- python3 -c "$GPU"
kubetrain run --name gpu0 --gpu 0 --cpu 2 --memory 24Gi --no-snapshot -w /tmp/work --wait -- python3 -c "$GPU"
kubetrain run --name gpu2 --gpu 2 --no-snapshot -w /tmp/work --wait -- true
for j in gpu1 gpu0 gpu2; do echo "== $j"; kubetrain describe $j | sed -n '2,3p;/Attempts/,$p'; kubetrain logs $j; done
kubetrain server stop
