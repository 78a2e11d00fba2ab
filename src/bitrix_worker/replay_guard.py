"""Pure: would replaying a dead-lettered operation roll its key back?

An operation waits in the dead-letter stream while its key moves on: an update dead-lettered on Monday and
replayed on Friday would put a deal that reached WON back to NEW. Before a replay (and in ``--dry-run``) each
entry is checked against its key's last applied write: by version when both have one, else by time (the key
was written after this operation was enqueued). Such an entry is skipped with the reason unless forced.
Writes that applied nothing (``failed``/``unknown``: a create that was dead-lettered) do not count, so a
key's create and the operations that waited behind it replay together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .values import LastWrite

APPLIED_STATES = frozenset({"active", "deleted"})


def stream_ms(stream_id: str) -> int:
    head = stream_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def moved_on(operation: dict[str, Any], enqueued_ms: int, last: LastWrite | None) -> str | None:
    """Why replaying this operation would roll its key back, or None when it is safe."""
    if last is None or last.state not in APPLIED_STATES:
        return None
    version = operation.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and last.version is not None:
        if version < last.version:
            return f"the key is at version {last.version}, this operation is version {version}"
        return None
    if enqueued_ms and last.at_ms > enqueued_ms:
        when = datetime.fromtimestamp(last.at_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"the key was written at {when}, after this operation was enqueued"
    return None
