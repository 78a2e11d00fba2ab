"""b24pysdk (the official Python SDK) on the same workload, in its own process, as its docs show it.

``python -m bench.b24pysdk_runner WEBHOOK IDS_JSON_FILE`` builds ``client.crm.deal.update(bitrix_id=..,
fields=..)`` for every id and sends them with ``client.call_batches(requests)`` (50 commands per ``batch``,
one batch at a time, its default retry policy: 3 attempts on HTTP 503, waiting 1 s then 2 s), and prints one
JSON line: wall time, the exception if it gave up, and how many results it returned. It keeps nothing
outside the process, so what the portal applied is read from the emulator by the caller.

One shim, transport only: the SDK always builds ``https://<domain>/rest``; the emulator listens on plain
HTTP on loopback, so the runner swaps the scheme of that one URL. Requests, batching, retries and waits
are the SDK's own.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def _plain_http() -> None:
    module = importlib.import_module("b24pysdk.api.callers.call_method")

    def base_url(self: Any) -> str:
        return f"http://{self._domain}/rest"

    module._MethodCaller._base_url = property(base_url)


def run(webhook: str, ids: list[int], fields: dict[str, Any]) -> dict[str, Any]:
    from b24pysdk import BitrixWebhook, Client

    logging.getLogger("b24pysdk").setLevel(logging.CRITICAL)
    _plain_http()
    parts = urlsplit(webhook)
    user_id, secret = [s for s in parts.path.split("/") if s][1:3]
    client = Client(BitrixWebhook(domain=parts.netloc, webhook_token=f"{user_id}/{secret}"))
    requests = [client.crm.deal.update(bitrix_id=i, fields=fields) for i in ids]
    started = time.monotonic()
    error = None
    returned = 0
    try:
        result = client.call_batches(requests).result
        returned = len(result.result)
    except Exception as exc:  # the point is to record what it raises
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
    return {"wall_s": round(time.monotonic() - started, 2), "exception": error, "results_returned": returned}


if __name__ == "__main__":
    hook, path = sys.argv[1], sys.argv[2]
    deal_ids = json.loads(Path(path).read_text())
    print(json.dumps(run(hook, deal_ids, {"STAGE_ID": "WON"})))
