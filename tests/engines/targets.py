"""The engines the contract runs on, each with the few things only its own world can do.

Who uses it: the ``under`` fixture (``conftest.py``).  Each target builds its engine as a master would,
makes a fresh one over the same state for a restart, takes a node away its own way, and reads back the
memory limit where the engine put it:

* local: this machine is the node, so losing it is losing what runs the attempt there, its supervisor
  (SIGKILL); the limit is the attempt's memory cgroup;
* kubernetes (the fake API server): the node goes NotReady and its pod ends ``NodeLost``, as the node
  controller reports a node that stopped answering; the limit is the pod's ``resources.limits.memory``;
* slurm (the real cluster): ``scontrol update state=down`` on the attempt's node (Slurm ends the job
  ``NODE_FAIL``); the limit is the job's ``--mem`` as Slurm holds it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
from pathlib import Path

from kubetrain.core.quantities import parse_memory
from kubetrain.engines.base import Engine, Observation
from kubetrain.settings import load_settings
from tests.engines.contract import EngineUnderTest
from tests.engines.slurm_cluster import alive, enforces_memory, slurm


class LocalTarget(EngineUnderTest):
    timeout = 30.0

    def __init__(self, scratch: Path) -> None:
        from kubetrain.engines.local.engine import LocalEngine

        self.settings = load_settings({"KUBETRAIN_HOME": str(scratch / "home"), "KUBETRAIN_GRACE_SECONDS": "1"})
        engine = LocalEngine(self.settings)
        engine.start()
        super().__init__(engine, scratch)

    def node_for_launch(self) -> str:
        return self.engine.inventory.name  # type: ignore[attr-defined]

    def fresh(self) -> Engine:
        from kubetrain.engines.local.engine import LocalEngine

        engine = LocalEngine(self.settings)
        engine.start()  # finds the node agent still running, as a restarted master does
        return engine

    def lose_node(self, seen: Observation) -> str:
        os.kill(seen.handle.data["supervisor_pid"], signal.SIGKILL)
        return self.node_for_launch()

    def kill_replica(self, seen: Observation, replica: int) -> None:
        """SIGKILL replica ``replica``'s job process, found where its supervisor records it (supervisor.json)."""
        from kubetrain.engines.local import supervisor as sv
        from kubetrain.engines.local.attempt_files import read_json

        info = read_json(Path(seen.handle.attempt_dir or "") / sv.SUPERVISOR) or {}
        pids = {r.get("replica"): r.get("pid") for r in info.get("replicas") or ()}
        assert pids.get(replica), f"no pid recorded for replica {replica}: {info}"
        os.kill(pids[replica], signal.SIGKILL)

    def memory_limit(self, seen: Observation) -> int | None:
        from kubetrain.engines.local import supervisor as sv
        from kubetrain.engines.local.attempt_files import read_json

        info = read_json(Path(seen.handle.attempt_dir or "") / sv.SUPERVISOR) or {}
        cgroup = info.get("cgroup") or {}
        memory = (cgroup.get("dirs") or {}).get("memory")
        if not memory or not cgroup.get("enforced"):
            return None
        for name in ("memory.limit_in_bytes", "memory.max"):  # cgroup v1, v2
            path = Path(memory) / name
            if path.exists():
                return int(path.read_text().strip())
        return None

    def close(self) -> None:
        from kubetrain.engines.local import supervisor as sv
        from kubetrain.engines.local.attempt_files import read_json

        for info_file in self.settings.attempts_dir.glob(f"*/*/{sv.SUPERVISOR}"):
            info = read_json(info_file) or {}
            if info.get("pid") and alive(info["pid"]):
                os.kill(info["pid"], signal.SIGTERM)  # the supervisor stops its job's whole tree
        try:
            agent = int((self.settings.run_dir / "agent.pid").read_text())
        except (OSError, ValueError):
            agent = 0
        if agent and alive(agent):
            os.kill(agent, signal.SIGTERM)
        shutil.rmtree(self.scratch, ignore_errors=True)


class KubernetesTarget(EngineUnderTest):
    """The fake cluster, or a real one (``KUBETRAIN_TEST_KUBECONFIG``): there, what only the fake can do (take a
    node away, kill one process of a pod, run this machine's scripts) is skipped with the reason, and a go file
    lives in the job's pod, opened through ``pods/exec``."""

    timeout = 60.0
    #: Behaviours a real cluster cannot show in this test: the fake does them from inside its kubelet.
    FAKE_ONLY = {"node-loss": "taking a node away needs the fake cluster",
                 "gang-ddp": "its replicas run this machine's ddp_job.py (the fake runs pods here)",
                 "gang-kill-resume": "killing one replica's process and this machine's script need the fake cluster"}

    def __init__(self, cluster, scratch: Path) -> None:  # cluster: tests.k8s.cluster.Cluster
        from kubetrain.engines.kubernetes.engine import KubernetesEngine
        from kubetrain.engines.kubernetes.manifests import KubernetesSettings

        self.cluster = cluster
        if not cluster.real:
            for node in ("node-1", "node-2"):  # two, so that attempt 2 has somewhere to go when one is lost
                cluster.add_node(node, cpu="8", memory="32Gi")
        # A results claim, as a cluster that keeps checkpoints has: attempt 2 of a gang resumes from it.
        # On a real cluster of several nodes a gang's replicas need a ReadWriteMany class for it.
        self.settings = KubernetesSettings(namespace=cluster.namespace, master_id="kt-contract", results_claim="results",
                                           results_access_mode=os.environ.get("KUBETRAIN_TEST_RESULTS_ACCESS_MODE",
                                                                              "ReadWriteOnce"))
        self.attempts_dir = scratch / "attempts"
        self.engines = [KubernetesEngine(self.settings, cluster.api_client, attempts_dir=self.attempts_dir)]
        super().__init__(self.engines[0], scratch)

    def cannot(self, behaviour: str) -> str | None:
        return self.FAKE_ONLY.get(behaviour) if self.cluster.real else None

    def gate_path(self) -> str:
        return super().gate_path() if not self.cluster.real else f"/tmp/go-{secrets.token_hex(4)}"

    def open_gate(self, path: str) -> None:
        """On a real cluster: create the file in every running pod of this target (one test's at a time)."""
        if not self.cluster.real:
            return super().open_gate(path)
        from kubernetes import client
        from kubernetes.stream import stream

        core = client.CoreV1Api(self.cluster.exec_client())  # stream() patches its client: never the shared one
        pods = core.list_namespaced_pod(self.cluster.namespace, field_selector="status.phase=Running",
                                        label_selector=f"kubetrain.io/master={self.settings.master_id}").items
        assert pods, "no running pod to open the gate in"
        for pod in pods:
            if pod.metadata.deletion_timestamp:  # an earlier test's pod, stopping
                continue
            stream(core.connect_get_namespaced_pod_exec, pod.metadata.name, self.cluster.namespace, container="job",
                   command=["python3", "-c", f"open({path!r}, 'w').close()"],
                   stderr=True, stdin=False, stdout=True, tty=False)

    def fresh(self) -> Engine:
        from kubetrain.engines.kubernetes.engine import KubernetesEngine

        self.engines.append(KubernetesEngine(self.settings, self.cluster.api_client, attempts_dir=self.attempts_dir))
        return self.engines[-1]

    def lose_node(self, seen: Observation) -> str:
        """The node stops answering: NotReady, and its pod's container gone with it, ended ``NodeLost``."""
        from tests.k8s.fake_apiserver import NODES, PODS, now

        fake, namespace = self.cluster.fake, self.cluster.namespace
        node, pod = seen.handle.node, seen.handle.data["pod"]

        def not_ready(obj: dict) -> None:
            obj["status"]["conditions"] = [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                                            "message": "Kubelet stopped posting node status.",
                                            "lastHeartbeatTime": now(), "lastTransitionTime": now()}]

        def node_lost(obj: dict) -> None:
            obj["status"].update(phase="Failed", reason="NodeLost", message=f"Node {node} which was running pod "
                                 f"{pod} is unresponsive")

        async def lose() -> None:
            run = fake.kubelet.pods.get((namespace, pod))
            fake.kubelet._kill_pod(namespace, pod)
            if run is not None:
                run.phase = "Failed"  # the fake kubelet no longer reports this pod: its node is gone
            await fake.server.mutate(NODES, None, node, not_ready)
            await fake.server.mutate(PODS, namespace, pod, node_lost)

        fake.call(lose())
        return node

    def kill_replica(self, seen: Observation, replica: int) -> None:
        """SIGKILL the process of replica ``replica``'s pod, as the fake kubelet runs it (the container ends 137)."""
        fake, namespace, pod = self.cluster.fake, self.cluster.namespace, seen.handle.data["pods"][replica]

        async def kill() -> None:
            fake.kubelet._kill_pod(namespace, pod)

        fake.call(kill())

    def memory_limit(self, seen: Observation) -> int | None:
        pod = self.cluster.core.read_namespaced_pod(seen.handle.data["pod"], self.cluster.namespace)
        return parse_memory(pod.spec.containers[0].resources.limits["memory"])

    def close(self) -> None:
        for engine in self.engines:
            engine.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)


#: Slurm's ``%m`` (``--mem``), e.g. ``128M``: its units are powers of 1024.
_SLURM_MEMORY = re.compile(r"^(\d+)([KMGT]?)$")


class SlurmTarget(EngineUnderTest):
    timeout = 90.0

    def __init__(self, scratch: Path) -> None:
        from kubetrain.engines import build_engine

        self.settings = load_settings({"KUBETRAIN_HOME": str(scratch / "home"), "KUBETRAIN_ENGINE": "slurm"})
        engine = build_engine(self.settings, master_url=None)
        engine.provision_volume("results", None)
        self.downed: list[str] = []
        super().__init__(engine, scratch)

    def cannot(self, behaviour: str) -> str | None:
        if behaviour == "deadline" and os.environ.get("KUBETRAIN_TEST_SLURM_SLOW") != "1":
            return ("Slurm counts time limits in whole minutes and checks them every 30 s: 60-90 s, over the "
                    "contract's budget (test_slurm.py has it; KUBETRAIN_TEST_SLURM_SLOW=1 runs it)")
        if behaviour == "oom" and not enforces_memory():
            return "this host has no writable cgroup v1 memory controller: Slurm only polls memory here"
        return None

    def fresh(self) -> Engine:
        from kubetrain.engines import build_engine

        return build_engine(self.settings, master_url=None)

    def lose_node(self, seen: Observation) -> str:
        node = seen.handle.node
        assert node, seen
        slurm("scontrol", "update", f"nodename={node}", "state=down", "reason=kubetrain-contract")
        self.downed.append(node)
        return node

    def kill_replica(self, seen: Observation, replica: int) -> None:
        """SIGKILL the command of replica ``replica``, as the kernel's OOM killer would: Slurm cannot signal
        one task of a step (``scancel`` takes a job or a step), and the nodes are this machine, so the
        replica's wrapper (``/bin/sh <attempt>/task.sh``, ``SLURM_PROCID=K``) is found here and its children
        killed; the wrapper records the 137 and srun stops the other replicas, as on a real node."""
        import psutil

        wrapper = ["/bin/sh", str(Path(seen.handle.attempt_dir or "") / "task.sh")]
        killed = []
        for process in psutil.process_iter(["cmdline"]):
            try:
                if process.info["cmdline"] != wrapper or process.environ().get("SLURM_PROCID") != str(replica):
                    continue
                for child in process.children(recursive=True):
                    child.kill()
                    killed.append(child.pid)
            except psutil.Error:
                continue
        assert killed, f"no running process of replica {replica} under {wrapper}"

    def memory_limit(self, seen: Observation) -> int | None:
        text = slurm("squeue", "--noheader", "-j", str(seen.handle.data["slurm_job_id"]), "-o", "%m").strip()
        match = _SLURM_MEMORY.match(text)
        assert match, f"squeue %m answered {text!r}"
        return int(match.group(1)) * 1024 ** " KMGT".index(match.group(2) or "M")

    def close(self) -> None:
        master = self.engine.slurm.master_id  # type: ignore[attr-defined]
        ours = [line.split()[0] for line in slurm("squeue", "--noheader", "-o", "%i %j").splitlines()
                if len(line.split()) == 2 and line.split()[1].startswith(f"{master}.")]
        if ours:
            slurm("scancel", *ours)
        for node in self.downed:
            slurm("scontrol", "update", f"nodename={node}", "state=resume")
        shutil.rmtree(self.scratch, ignore_errors=True)
