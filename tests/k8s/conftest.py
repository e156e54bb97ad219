"""The ``cluster`` fixture for Kubernetes engine tests.

By default it is a fake cluster over real HTTP on 127.0.0.1 (kmock's KubernetesEmulator + a fake kubelet
and Job controller that run containers as local processes), so these tests need no cluster.  With
``KUBETRAIN_TEST_KUBECONFIG=/path/to/kubeconfig`` the same tests run against that cluster, in a
throw-away namespace ``kubetrain-test-<random>`` deleted at teardown; ``cluster.add_node`` then skips.
See :mod:`tests.k8s.cluster`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .cluster import Cluster, fake_cluster, real_cluster


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    kubeconfig = os.environ.get("KUBETRAIN_TEST_KUBECONFIG")
    if kubeconfig:
        yield from real_cluster(kubeconfig)
    else:
        yield from fake_cluster(tmp_path_factory.mktemp("fake-k8s"))
