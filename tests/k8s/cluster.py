"""The ``Cluster`` handed to Kubernetes tests: a fake one over real HTTP, or a real one from a kubeconfig.

Why: engine tests must speak the real API through the official client either way, so the only
difference a test sees is ``cluster.real`` (and ``add_node``/``add_tenant_pod``, which only the fake can do).

The fake runs kmock's server, the fake API (:mod:`.fake_apiserver`) and the fake kubelet
(:mod:`.fake_kubelet`) on an event loop in a background thread; the test thread reaches them with the
``kubernetes`` client over HTTP on 127.0.0.1, or through :meth:`FakeBackend.call` for helpers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import string
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kmock
import pytest
from kubernetes import client, config

from .fake_apiserver import NAMESPACES, NODES, PODS, FakeApiServer, now
from .fake_kubelet import FakeKubelet

T = TypeVar("T")
FAKE_NAMESPACE = "kubetrain"


class FakeBackend:
    """kmock server + fake kubelet on their own event loop in a daemon thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = ""
        self.server: FakeApiServer | None = None
        self.kubelet: FakeKubelet | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="fake-k8s", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.result(timeout=30)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with FakeApiServer() as server, kmock.Server(server) as http:
                self.server = server
                self.kubelet = kubelet = FakeKubelet(server, self.folder)
                server.log_source = kubelet.log_source
                server.metrics_source = kubelet.pod_metrics  # metrics-server is there; None: as if not installed
                for name in ("default", FAKE_NAMESPACE):
                    await server.add(NAMESPACES, None, {"metadata": {"name": name}})
                task = asyncio.create_task(kubelet.run())
                self.url = str(http.url).rstrip("/")
                self._ready.set_result(None)
                try:
                    await self._stop.wait()
                finally:
                    server.closing.set()  # ends open watches and log follows, else aiohttp waits for them
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    kubelet.shutdown()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Run a coroutine on the fake's loop (where all its state lives) and wait for the result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> list[str]:
        """Stop the server and kill every pod process; return the fake's own errors (its bugs), if any."""
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        errors = list(self.kubelet.errors if self.kubelet else []) + list(self.server.internal_errors
                                                                           if self.server else [])
        if self._thread.is_alive():
            errors.append("the fake cluster's thread did not stop within 30 s")
        return errors


@dataclass
class Cluster:
    api_client: client.ApiClient
    namespace: str
    real: bool
    fake: FakeBackend | None = None

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api_client)

    def _fake_server(self, what: str) -> FakeApiServer:
        if self.real or self.fake is None or self.fake.server is None:
            pytest.skip(f"{what} needs the fake cluster (KUBETRAIN_TEST_KUBECONFIG is set)")
        return self.fake.server

    def add_node(self, name: str, *, cpu: str = "4", memory: str = "16Gi", gpus: int = 0,
                 labels: dict[str, str] | None = None, unschedulable: bool = False, ready: bool = True,
                 taints: list[dict[str, str]] | None = None) -> None:
        """Register a v1 Node in the fake (allocatable = capacity); skips the test on a real cluster.

        ``taints``: as Kubernetes writes them, ``{"key": .., "value": .., "effect": "NoSchedule"}``."""
        server = self._fake_server("add_node")
        resources = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi",
                     **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
        stamp = now()
        spec: dict[str, Any] = {"taints": [{**taint, "timeAdded": stamp} for taint in taints or []]}
        if unschedulable:
            spec = {"unschedulable": True, "taints": [*spec["taints"], {"key": "node.kubernetes.io/unschedulable",
                                                                        "effect": "NoSchedule", "timeAdded": stamp}]}
        if not spec["taints"]:
            del spec["taints"]
        body = {
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                  "kubernetes.io/arch": "amd64", **(labels or {})}},
            "spec": spec,
            "status": {
                "capacity": dict(resources), "allocatable": dict(resources),
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
                "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                "reason": "KubeletReady" if ready else "KubeletNotReady",
                                "message": "kubelet is posting ready status" if ready else "fake: not ready",
                                "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}]},
        }
        self.fake.call(server.add(NODES, None, body))

    def add_tenant_pod(self, name: str, node: str, cpu: str, memory: str, gpus: int = 0,
                       namespace: str = "other-team") -> dict[str, Any]:
        """Another tenant's pod, bound to ``node`` (as after the kube-scheduler bound it), running a sleep.

        Its requests hold part of the node for everyone else; ``namespace`` is created if missing.  Skips the
        test on a real cluster, where other tenants are whoever is there."""
        server = self._fake_server("add_tenant_pod")
        assert self.fake is not None
        requests = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
        body = {"metadata": {"name": name, "labels": {"app": name}},
                "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [{
                    "name": "main", "image": "busybox",
                    "command": [sys.executable, "-c", "import time; time.sleep(3600)"],
                    "resources": {"requests": requests}}]},
                "status": {"phase": "Pending"}}

        async def create() -> dict[str, Any]:  # on the fake's loop, where its state lives
            if server.get(NAMESPACES, None, namespace) is None:
                await server.add(NAMESPACES, None, {"metadata": {"name": namespace}})
            return await server.add(PODS, namespace, body)
        return self.fake.call(create())

    def exec_client(self) -> client.ApiClient:
        """A client of its own for ``kubernetes.stream`` (which patches the client it is given): real clusters."""
        import os

        return config.new_client_from_config(config_file=os.environ["KUBETRAIN_TEST_KUBECONFIG"])

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10, what: str = "condition",
                 interval: float = 0.02) -> T:
        """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = predicate()
            if last:
                return last
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")
            time.sleep(interval)


def fake_cluster(folder: Path) -> Iterator[Cluster]:
    backend = FakeBackend(folder)
    backend.start()
    api_client = client.ApiClient(client.Configuration(host=backend.url))
    try:
        yield Cluster(api_client=api_client, namespace=FAKE_NAMESPACE, real=False, fake=backend)
    finally:
        api_client.close()
        errors = backend.stop()
    if errors:
        raise AssertionError("the fake Kubernetes cluster itself failed:\n" + "\n".join(errors))


def real_cluster(kubeconfig: str) -> Iterator[Cluster]:
    api_client = config.new_client_from_config(config_file=kubeconfig)
    namespace = "kubetrain-test-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": namespace, "labels": {"kubetrain.io/test": "true"}}})
    try:
        yield Cluster(api_client=api_client, namespace=namespace, real=True)
    finally:
        try:
            core.delete_namespace(namespace, propagation_policy="Background")
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        finally:
            api_client.close()
