"""Strict checks of the settings' connection URLs: a typo stops the start instead of going wrong later.

redis-py reads ``redis://host:6379/x`` as database 0 without a word (on a shared Redis that is another
tenant's stream), and a bad port or a host with a space in any URL only fails at the first connection, as a
traceback or a hang. These pure functions accept exactly the shapes the clients read the way the operator
meant, and raise ``ValueError`` with a one-line message that shows the URL through ``redact_url`` (the
password never appears). ``config.Settings`` turns that into a ``ConfigError`` naming the variable.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qs, urlsplit

from .redaction import HOST_PATTERN as _HOST
from .redaction import redact_url

__all__ = ["check_database_url", "check_host", "check_redis_url", "split_cluster_url"]

_DB_PATH = re.compile(r"/?|/\d{1,5}")


def check_host(host: str) -> str:
    """A host name or address to bind or connect to; raises ValueError for anything else."""
    if not _HOST.fullmatch(host):
        raise ValueError("must be a host name or an IP address (no spaces)")
    return host


def _split(url: str) -> tuple[SplitResult, int | None]:
    """``urlsplit`` plus the port, both checked: ``ValueError`` for a port that is not 1-65535."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port (expected 1-65535) in {redact_url(url)}") from None
    if port == 0:
        raise ValueError(f"bad port (expected 1-65535) in {redact_url(url)}")
    if parts.hostname and not _HOST.fullmatch(parts.hostname):
        raise ValueError(f"bad host name in {redact_url(url)}")
    return parts, port


def _query_db(parts: SplitResult, url: str) -> None:
    for value in parse_qs(parts.query, keep_blank_values=True).get("db", []):
        if not value.isdigit():
            raise ValueError(f"db={value!r} is not a database number in {redact_url(url)}")


def split_cluster_url(url: str) -> tuple[str, list[str]]:
    """``redis+cluster://[auth@]h1[:p1][,h2[:p2]...][/0][?query]`` -> (the first node's URL with the plain
    scheme and everything else kept, every node as written). Several seed nodes let a client start while
    one of them is down (after a failover, say)."""
    scheme, rest = url.split("://", 1)
    auth, at, tail = rest.rpartition("@")
    end = len(tail)
    for mark in "/?#":
        if mark in tail:
            end = min(end, tail.index(mark))
    nodes = tail[:end].split(",")
    return f"{scheme.removesuffix('+cluster')}://{auth}{at}{nodes[0]}{tail[end:]}", nodes


def _check_cluster_url(url: str) -> str:
    first, nodes = split_cluster_url(url)
    parts, _port = _split(first)
    if not all(nodes) or not parts.hostname:
        raise ValueError(
            f"no host in {redact_url(url)} (a Cluster URL lists host:port seeds, comma-separated)"
        )
    for node in nodes[1:]:
        if not _split(f"redis://{node}")[0].hostname:
            raise ValueError(f"no host in {redact_url(url)}")
    if parts.path.strip("/") not in ("", "0") or "db=" in parts.query:
        raise ValueError(f"a Redis Cluster has only database 0: drop the path in {redact_url(url)}")
    return url


def check_redis_url(url: str) -> str:
    """``redis://[[user]:password@]host[:port][/db]``, ``rediss://…``, ``unix:///path[?db=N]``, or a Redis
    Cluster's seed nodes ``redis+cluster://[[user]:password@]host[:port][,host[:port]...]``
    (``rediss+cluster://``): a Cluster has only database 0, so any other number is refused rather than
    silently ignored."""
    if not url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")):
        raise ValueError(
            "must start with redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://"
        )
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        return _check_cluster_url(url)
    parts, _port = _split(url)
    _query_db(parts, url)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"unix:// needs the socket path, got {redact_url(url)}")
        return url
    if not parts.hostname:
        raise ValueError(f"no host in {redact_url(url)}")
    if not _DB_PATH.fullmatch(parts.path):
        shown = parts.path.lstrip("/")
        raise ValueError(f"the path must be a database number (/0), not {shown!r}, in {redact_url(url)}")
    return url


def check_database_url(url: str) -> str:
    """A normalised ``postgresql+asyncpg://`` URL has a valid port and host; SQLite paths pass as they are."""
    if url.startswith("postgresql+asyncpg://"):
        _split(url)
    return url
