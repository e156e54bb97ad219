"""A tiny data-parallel training run, and the same training in one process for reference (issue 12).

Run as a job (``python ddp_job.py``) by each replica of a distributed job: it
joins ``torch.distributed`` through ``env://`` (the variables every engine
sets, core/distributed.py), trains a linear model with DDP (gloo, CPU) on its
shard of a generated data set, and rank 0 prints the final weights as one
``WEIGHTS [...]`` line.  :func:`train_single` trains the same model on the
global batch in one process: with equal shards DDP's averaged gradient is the
global batch's gradient, so both must end at the same weights (to float
tolerance) — a numerical check that the replicas really trained together.

With ``KUBETRAIN_CHECKPOINT_DIR`` set and ``DDP_CHECKPOINT_EVERY`` > 0, rank 0
saves a checkpoint every so many steps and every rank resumes from the latest
one, printing ``resumed from step N`` (the failure behaviour of the contract).
With ``DDP_GO_FILE``, every rank waits for that file after its first
checkpoint (so a test can act mid-run).
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

STEPS = 20
LR = 0.1
SAMPLES = 64


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 8, generator=generator)
    y = x @ torch.randn(8, 1, generator=generator) + 0.01 * torch.randn(SAMPLES, 1, generator=generator)
    return x, y


def model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Linear(8, 1)


def weights(module: torch.nn.Module) -> list[float]:
    return [float(v) for p in module.parameters() for v in p.detach().flatten()]


def train_single() -> list[float]:
    """The reference: one process, the whole batch."""
    x, y = data()
    net = model()
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
    return weights(net)


def _checkpoint_path() -> str | None:
    folder = os.environ.get("KUBETRAIN_CHECKPOINT_DIR")
    return os.path.join(folder, "ddp.pt") if folder and int(os.environ.get("DDP_CHECKPOINT_EVERY", "0")) else None


def train_ddp() -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    print(f"rank {rank} of {world} (replica {os.environ.get('KUBETRAIN_REPLICA')})", flush=True)
    x, y = data()
    shard = slice(rank * SAMPLES // world, (rank + 1) * SAMPLES // world)
    net = torch.nn.parallel.DistributedDataParallel(model())
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    start, path = 0, _checkpoint_path()
    every = int(os.environ.get("DDP_CHECKPOINT_EVERY", "0"))
    if path and os.path.exists(path):
        state = torch.load(path)
        net.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        print(f"resumed from step {start}", flush=True)
    go = os.environ.get("DDP_GO_FILE")
    for step in range(start, STEPS):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(x[shard]), y[shard]).backward()
        optimizer.step()
        done = step + 1
        if path and every and done % every == 0:
            if rank == 0:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                torch.save({"model": net.module.state_dict(), "optimizer": optimizer.state_dict(), "step": done},
                           path + ".tmp")
                os.replace(path + ".tmp", path)
            dist.barrier()
            print(f"checkpoint at step {done}", flush=True)
            while go and not os.path.exists(go):
                time.sleep(0.05)
    if rank == 0:
        print("WEIGHTS " + json.dumps(weights(net.module)), flush=True)
    dist.barrier()  # no rank leaves while another still talks to it
    # Leave without running gloo's C++ teardown: with one CPU per replica its
    # background threads are sometimes still joinable when the process group
    # is destroyed, and std::terminate aborts the process ("terminate called
    # without an active exception", SIGABRT) after the training has finished —
    # seen about once in 15 runs.  The weights are printed and flushed; the
    # barrier above means no peer still needs this one.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    train_ddp()
    sys.exit(0)
