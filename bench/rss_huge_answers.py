"""Peak memory of one process whose requests all get enormous answers.

Sends ``--calls`` concurrent ``crm.deal.add`` requests through ``BitrixClient`` with the production
defaults (``max_response_bytes``, ``request_deadline_s``) to a webhook whose answers are huge (the emulator's
``huge`` fault), then prints JSON: each call's outcome and this process's peak RSS (``VmHWM``). Run it
in its own process so that nothing else (an emulator in the same interpreter) is counted:

    bitrix-worker emulator --port 9424 --no-limits \\
        --faults '{"rules": [{"method": "crm.deal.add", "kind": "huge"}], "huge_bytes": 300000000}' &
    python -m bench.rss_huge_answers http://127.0.0.1:9424/rest/1/emulator-secret/ --calls 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

from bitrix_worker import defaults as d
from bitrix_worker.bitrix import BitrixClient
from bitrix_worker.errors import BitrixError
from bitrix_worker.redaction import WebhookUrl


def _peak_rss_mb() -> float:
    """This process's own peak (``VmHWM``). Not ``ru_maxrss``: Linux carries it across ``exec``, so a child of
    a large process (pytest after a thousand tests) would report its parent's size at the fork."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; elsewhere no /proc


async def _one(client: BitrixClient, n: int) -> str:
    try:
        await client.call("crm.deal.add", {"fields": {"TITLE": f"rss {n}"}})
    except BitrixError as exc:
        return f"{exc.classification.error_class.value}/{exc.classification.execution.value}"
    return "ok"


async def main(url: str, calls: int, cap: int) -> dict[str, object]:
    baseline = _peak_rss_mb()
    started = time.monotonic()
    async with BitrixClient(
        WebhookUrl.parse(url),
        connect_timeout_s=d.CONNECT_TIMEOUT_S,
        read_timeout_s=d.READ_TIMEOUT_S,
        max_response_bytes=cap,
    ) as client:
        outcomes = await asyncio.gather(*(_one(client, n) for n in range(calls)))
    return {
        "calls": calls,
        "max_response_bytes": cap,
        "outcomes": list(outcomes),
        "seconds": round(time.monotonic() - started, 2),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("webhook_url")
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--cap", type=int, default=d.MAX_RESPONSE_BYTES, help="max_response_bytes")
    args = parser.parse_args()
    sys.stdout.write(json.dumps(asyncio.run(main(args.webhook_url, args.calls, args.cap))) + "\n")
