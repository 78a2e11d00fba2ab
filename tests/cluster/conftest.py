"""Fixtures for the Redis Cluster tests: a real 6-node Cluster on loopback (``local_cluster``) and the worker
bench of ``tests/integration/harness.py`` wired to it (a stream whose every key shares one slot).

Skipped, with the reason, only when ``redis-server``/``redis-cli`` are not installed.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from cluster_harness import close_cluster_bench, open_cluster_bench
from harness import Bench
from scripts.local_cluster import LocalCluster, missing_binaries


def _started(root: Path) -> Iterator[LocalCluster]:
    why = missing_binaries()
    if why:
        pytest.skip(f"no local Redis Cluster: {why}")
    cluster = LocalCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One Cluster for the tests that do not break it (3 primaries, 3 replicas)."""
    yield from _started(tmp_path_factory.mktemp("cluster"))


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A Cluster of this test's own, for a test that kills a node."""
    yield from _started(tmp_path / "cluster")


@pytest.fixture
def prefix() -> str:
    return f"ct:{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def cluster_bench(local_cluster: LocalCluster, prefix: str, tmp_path: Path) -> AsyncIterator[Bench]:
    bench, emulator = await open_cluster_bench(local_cluster, prefix, tmp_path)
    try:
        yield bench
    finally:
        await close_cluster_bench(bench, emulator, prefix)
