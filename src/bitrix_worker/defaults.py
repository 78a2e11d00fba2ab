"""Every default in one place, with its unit in the name, and the Redis key layout.

Budgets are retries *after* the first attempt (docs/errors.md). Key names derive from the stream
name as ``{<stream>}:<suffix>`` so that every key one Lua script touches sits in the stream's Redis Cluster
slot; the one exception is the portal's request bucket, ``{portal:<host>}:limiter``, which every stream
calling that portal shares (its script touches only that key).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STREAM = "bitrix:operations"
GROUP = "bitrix-worker"
DEAD_STREAM = "bitrix:operations:dead"
REDIS_URL = "redis://localhost:6379/0"


def database_url() -> str:
    """The default mapping store: a SQLite file in the user's data directory ($XDG_DATA_HOME, else
    ~/.local/share), never relative to the working directory (two directories would be two stores)."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite+aiosqlite:///{base / 'bitrix-worker' / 'mapping.sqlite3'}"


ORIGINATOR_ID = "bitrix-worker"

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
RATE_LIMIT_BACKOFF_BASE_S = 1.0

RETRIES_NOT_FOUND_UPDATE = 0
RETRIES_NOT_FOUND_CREATE = 1
RETRIES_INVALID_DATA = 1
RETRIES_AUTH = 1
RETRIES_SERVER_ERROR = 5
RETRIES_NETWORK = 5
RETRIES_RATE_LIMITED = 20
RETRIES_METHOD_LIMITED = 20

CONCURRENCY = 4  # batch calls in flight per worker process
BATCH_SIZE = 50  # commands per `batch` call; Bitrix24 allows at most 50
BLOCK_MS = 1000
CLAIM_IDLE_MS = 60_000
TAIL_LINGER_S = 4.0  # a short claim waits at most this long for retries about to join it (``gathering``)
MAX_DELIVERIES = 5

RATE_BURST = 50
RATE_PER_S = 2.0
RATE_SAFETY = 0.98  # fraction of the portal's drain rate and burst we allow ourselves (docs/benchmarks.md)
RATE_SHARE = 1.0  # fraction of the portal's budget this deployment may use; the rest is left to other apps
OPERATING_BUDGET_S = 480.0
OPERATING_SAFETY = 0.9

BREAKER_COOLDOWN_S = 30.0
BREAKER_MAX_COOLDOWN_S = 600.0
BLOCKED_COOLDOWN_S = 600.0
PORTAL_FAILURE_THRESHOLD = 3  # whole requests failing in a row (any worker) before the portal is paused

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 65.0  # the cloud cuts a request at 60 s: never give up before the portal does
PORTAL_REQUEST_TIMEOUT_S = 60.0  # after this a sent request has certainly finished or been cut
REQUEST_DEADLINE_S = 70.0  # whole request, first byte sent to last byte read: just above the 60 s cut-off
MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # a real answer to 50 commands is well under 1 MiB
SHUTDOWN_GRACE_S = 30.0
HTTP_PORT = 9400
METRICS_PORTALS = 200  # a multi-portal process labels at most this many portals; the rest are "other"
LIVE_HEARTBEATS = 3  # a worker is live while its last heartbeat is younger than this many intervals
PORTAL_BUSY_AFTER_S = 10.0  # a portal whose claims come back full this long counts as busy (placement)
PORTAL_QUIET_AFTER_S = 60.0  # ... and as quiet again after this long without a full claim
OUTCOMES_MAXLEN = 100_000
DASHBOARD_PORT = 9410
DASHBOARD_REFRESH_S = 3.0
DASHBOARD_SCAN_CAP = 3_000  # entries one dashboard page scans per stream at most (keeps pages < 300 ms)
DEDUPE_WINDOW_S = 3600.0  # a producer's op_id is remembered this long (producer.enqueue(op_id=...))
REPLICA_TIMEOUT_S = 1.0  # how long enqueue(replicas=n) waits for the replicas (WAIT)
DESCRIPTION_MAX_CHARS = 200
SCHEMA_REFRESH_MIN_S = 60.0  # an early refresh (after a surprise) at most this often per entity
SCHEMA_TTL_S = 3600.0  # a portal's field schema is refetched at most this often (plus on a surprise)
HISTORY_MAX_ENTRIES = 50
HISTORY_MAX_BYTES = 1 << 20  # a history read back from a stream field or unit; larger ones are ignored
UNIT_MAX_BYTES = 64 << 20  # a retry unit: up to a batch of payloads and their histories
UNSENT_DELIVERIES_FACTOR = 10  # deliveries that never got sent, in multiples of max_deliveries (poison)
STALL_AFTER_S = 600.0  # holding entries without progress this long: /healthz and /readyz say stuck


def portal_id(portal: str) -> str:
    """The portal as keys name it: its lower-cased host (and port), never anything before an ``@``."""
    return portal.rpartition("@")[2].lower()


def portal_limiter_key(portal: str) -> str:
    """``{portal:<host>}:limiter``: shared by every stream that calls the portal (StreamKeys.limiter)."""
    return f"{{portal:{portal_id(portal)}}}:limiter"


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """Names of every Redis key derived from one stream."""

    stream: str
    dead: str

    def _k(self, suffix: str) -> str:
        return f"{{{self.stream}}}:{suffix}"

    @property
    def schedule(self) -> str:
        """Sorted set: origin id -> due time (ms)."""
        return self._k("schedule")

    @property
    def schedule_data(self) -> str:
        """Hash: origin id -> retry envelope (JSON)."""
        return self._k("schedule:data")

    @property
    def holds(self) -> str:
        """Hash: entity:key -> number of live operations that own the key's turn."""
        return self._k("holds")

    @property
    def parked(self) -> str:
        """Hash holding every key's queue of entries waiting for its turn (layout: redis/lua/turns.lua)."""
        return self._k("parked")

    @property
    def own(self) -> str:
        """Hash: stream id -> ``unit`` | ``replay`` for each entry the worker itself added (a producer's
        fields never decide that), and ``~since``, the newest id when this was first kept
        (redis/lua/turns.lua)."""
        return self._k("own")

    @property
    def sent(self) -> str:
        """Hash: stream id -> how many times a request carrying it was sent (the poison cap counts these)."""
        return self._k("sent")

    def legacy_parked(self, ident: str) -> str:
        """The per-key parked list of versions before 0.2 (moved into ``parked`` at start)."""
        return self._k(f"parked:{ident}")

    @property
    def outcomes(self) -> str:
        """Capped stream of final outcomes (applied / skipped / dead-lettered), for audit."""
        return self._k("outcomes")

    @property
    def counters(self) -> str:
        """Hash of lifetime counters (outcome:<kind>, calls) shared by all workers."""
        return self._k("counters")

    def lease(self, ident: str) -> str:
        return self._k(f"lease:{ident}")

    @property
    def fence(self) -> str:
        return self._k("fence")

    def limiter(self, portal: str) -> str:
        """Hash: the portal's shared request bucket (redis/lua/limiter.lua). Per *portal*, not per stream:
        Bitrix24 counts a portal's requests whoever sends them, so every deployment (every stream) that
        calls one portal from this Redis books its requests in one bucket. Its own hash tag keeps it in
        one Redis Cluster slot; limiter.lua touches no other key."""
        return portal_limiter_key(portal)

    def method_pause(self, portal: str) -> str:
        return self._k(f"method-pause:{portal}")

    def breaker(self, portal: str) -> str:
        return self._k(f"breaker:{portal}")

    def schema(self, portal: str, entity: str) -> str:
        """String: the parsed field schema of one entity on one portal (JSON, shared by all workers)."""
        return self._k(f"schema:{portal}:{entity}")

    def schema_refresh(self, portal: str, entity: str) -> str:
        """Short-lived lock: the one worker refetching a stale schema while the others keep using it."""
        return self._k(f"schema-refresh:{portal}:{entity}")

    def dedupe(self, op_id: str) -> str:
        """String with a TTL: a producer's op_id -> the stream id it was first enqueued under."""
        return self._k(f"dedupe:{op_id}")

    @property
    def store(self) -> str:
        """Hash: the mapping store this stream's creates are recorded in (id, highest fence, vouched)."""
        return self._k("store")

    @property
    def worker_stores(self) -> str:
        """Hash: consumer name -> the id of the mapping store it uses."""
        return self._k("worker-stores")

    @property
    def workers(self) -> str:
        """Hash: consumer name -> last heartbeat (ms)."""
        return self._k("workers")

    @property
    def portals(self) -> str:
        """Set (on the base stream only): ids of portals that producers wrote a stream for (portal_layout)."""
        return self._k("portals")

    @property
    def fleet(self) -> str:
        """Hash (on the base stream only): multi-portal worker process -> last heartbeat (ms); portals are
        divided among the live ones (portal_layout.assigned)."""
        return self._k("fleet")


def oauth_refresh_key(portal_id: str) -> str:
    """The lock held by the one process refreshing a portal's OAuth pair. Per portal, not per stream: every
    deployment that shares the portal registry must share it (a refresh token is single-use)."""
    return f"bitrix-worker:oauth-refresh:{{{portal_id}}}"
