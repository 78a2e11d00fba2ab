"""fast_bitrix24 on the same workload, in its own process (its sync API runs its own event loop).

``python -m bench.fast_runner WEBHOOK IDS_JSON_FILE`` sends ``crm.deal.update`` for every id with
``Bitrix(webhook).call(...)`` (50 per batch, its default throttling) and prints one JSON line: wall time,
the exception if it gave up, and how many results it returned. What the portal applied is read from the
emulator by the caller, because fast_bitrix24 does not say which operations were applied when it fails.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any


def run(webhook: str, ids: list[int], fields: dict[str, Any]) -> dict[str, Any]:
    from fast_bitrix24 import Bitrix

    logging.getLogger("fast_bitrix24").setLevel(logging.CRITICAL)
    bitrix = Bitrix(webhook, verbose=False)
    items = [{"ID": i, "fields": fields} for i in ids]
    started = time.monotonic()
    error = None
    returned = 0
    try:
        out = bitrix.call("crm.deal.update", items)
        returned = len(out) if isinstance(out, list | tuple) else 1
    except Exception as exc:  # the point is to record what it raises
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
    return {"wall_s": round(time.monotonic() - started, 2), "exception": error, "results_returned": returned}


if __name__ == "__main__":
    hook, path = sys.argv[1], sys.argv[2]
    deal_ids = json.loads(Path(path).read_text())
    print(json.dumps(run(hook, deal_ids, {"STAGE_ID": "WON"})))
