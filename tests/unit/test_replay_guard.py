"""The replay guard as a table: would replaying this dead letter roll its key back?"""

from __future__ import annotations

from typing import Any

import pytest

from bitrix_worker.replay_guard import moved_on
from bitrix_worker.values import LastWrite

T = 1_700_000_000_000


@pytest.mark.parametrize(
    ("operation", "last", "skip"),
    [
        ({"op": "update"}, None, False),  # the key was never written
        ({"op": "update"}, LastWrite("active", None, T - 1), False),  # written before it was enqueued
        ({"op": "update"}, LastWrite("active", None, T + 1), True),  # written after: it moved on
        ({"op": "update"}, LastWrite("deleted", None, T + 1), True),
        ({"op": "update"}, LastWrite("failed", None, T + 1), False),  # its create failed: replay together
        ({"op": "update"}, LastWrite("unknown", None, T + 1), False),
        ({"op": "update", "version": 3}, LastWrite("active", 5, T - 1), True),  # versions decide
        ({"op": "update", "version": 5}, LastWrite("active", 5, T + 1), False),  # the same version again
        ({"op": "update", "version": 7}, LastWrite("active", 5, T + 1), False),
        ({"op": "update", "version": 7}, LastWrite("active", None, T + 1), True),  # no stored version: time
        ({"op": "create"}, LastWrite("active", None, T + 1), True),  # a create would act as an update
    ],
)
def test_moved_on_table(operation: dict[str, Any], last: LastWrite | None, skip: bool) -> None:
    reason = moved_on(operation, T, last)
    assert (reason is not None) is skip
    if reason:
        assert "version" in reason or "written at" in reason
