"""A real Redis Cluster on loopback for the tests and the benchmarks: 3 primaries and 3 replicas, each a
``redis-server --cluster-enabled yes`` process in its own directory under a temp dir, joined by ``redis-cli
--cluster create``. The fixture starts it, waits for ``cluster_state:ok`` on every node, and stops exactly the
processes it started (by pid). A primary can be killed (SIGKILL) to make its replica take over."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis

NODES = 6
NODE_TIMEOUT_MS = 1000  # how long a primary may be silent before its replica is promoted


def missing_binaries() -> str | None:
    """Why a local Cluster cannot be started here, or None."""
    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not on PATH (install Redis >= 7, e.g. `apt-get install redis-server`)"
        )
    return None


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports whose cluster bus port (port + 10000) is free too."""
    ports: list[int] = []
    rng = random.Random()
    while len(ports) < count:
        port = rng.randrange(20000, 55000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not on PATH")
    return found


def _cli(port: int, *args: str, timeout: float = 5.0) -> str:
    done = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.stdout


@dataclass
class LocalCluster:
    root: Path
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The worker's REDIS_URL for this Cluster (any node is a seed; the client finds the rest)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    @property
    def seed(self) -> tuple[str, int]:
        return "127.0.0.1", self.ports[0]

    def _spawn(self, port: int) -> None:
        node_dir = self.root / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        log = open(node_dir / "redis.log", "ab")  # noqa: SIM115 - the process keeps it; closed in stop()
        self.logs.append(log)
        self.procs[port] = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                _binary("redis-server"),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--dir",
                str(node_dir),
                "--protected-mode",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=node_dir,
        )

    def start(self) -> None:
        self.ports = _free_ports(NODES)
        for port in self.ports:
            self._spawn(port)
        for port in self.ports:
            self._wait(lambda p=port: _cli(p, "PING").strip() == "PONG", f"node {port} to answer")
        created = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [
                _binary("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
        self.wait_ok()
        # A replica that never finished its first sync has no data age and never takes over from a dead
        # primary: wait until every replica's link to its primary is up.
        self._wait(self._replicas_synced, "every replica to sync with its primary")

    def _replicas_synced(self) -> bool:
        infos = [_cli(p, "INFO", "replication") for p in self.live_ports()]
        replicas = [i for i in infos if "role:slave" in i]
        return len(replicas) == NODES // 2 and all("master_link_status:up" in i for i in replicas)

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Every live node says cluster_state:ok (every slot served)."""

        def ok() -> bool:
            return all("cluster_state:ok" in _cli(p, "CLUSTER", "INFO") for p in self.live_ports())

        self._wait(ok, "cluster_state:ok on every node", timeout_s)

    def _wait(self, check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                if check():
                    return
            time.sleep(0.1)
        raise TimeoutError(f"waited {timeout_s} s for {what}")

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def nodes(self) -> list[dict[str, str]]:
        """CLUSTER NODES as seen from a live node: id, port, role (master/slave), master id, flags."""
        out = _cli(self.live_ports()[0], "CLUSTER", "NODES")
        rows = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 8:
                continue
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            role = "master" if "master" in parts[2] else "slave"
            rows.append(
                {"id": parts[0], "port": str(port), "role": role, "master": parts[3], "flags": parts[2]}
            )
        return rows

    def primary_of(self, key: str) -> int:
        """The port of the primary that now serves ``key``'s slot (CLUSTER SLOTS of a live node)."""
        with redis.Redis(host="127.0.0.1", port=self.live_ports()[0]) as node:
            slot = int(node.execute_command("CLUSTER", "KEYSLOT", key))
            ranges = node.execute_command("CLUSTER", "SLOTS")
        for lo, hi, primary, *_replicas in ranges:
            if int(lo) <= slot <= int(hi):
                return int(primary[1])
        raise LookupError(f"no primary serves slot {slot}")

    def replica_of(self, primary_port: int) -> int:
        rows = self.nodes()
        primary = next(r for r in rows if int(r["port"]) == primary_port)
        return next(int(r["port"]) for r in rows if r["master"] == primary["id"])

    def kill(self, port: int) -> None:
        """SIGKILL one node (no clean shutdown, no last AOF write)."""
        proc = self.procs[port]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def wait_promoted(self, port: int, timeout_s: float = 30.0) -> None:
        """Wait until ``port`` is a primary and the Cluster serves every slot again."""
        self._wait(
            lambda: _cli(port, "ROLE").splitlines()[:1] == ["master"], f"{port} to become primary", timeout_s
        )
        self.wait_ok(timeout_s)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for log in self.logs:
            log.close()
