"""The worker process's tuning (tuning.py): the collector and log records change, the lines do not."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = r"""
import gc, io, json, logging, sys
import structlog
from bitrix_worker.logs import configure_logging
if sys.argv[1] == "tuned":
    from bitrix_worker.tuning import tune_process
    tune_process()
out = io.StringIO()
configure_logging(fmt="json", level="info", secrets=["s3cret-token"], stream=out)
log = structlog.get_logger("bitrix_worker.delivery")
log.info("applied", op="update", entity="deal", key="order-1", stream_id="1-0", attempts=0, error_class=None)
log.info("with secret", url="https://portal/rest/1/s3cret-token/x")
logging.getLogger("uvicorn.error").warning("foreign %s", "line")
lines = [json.loads(line) for line in out.getvalue().splitlines()]
for line in lines:
    line.pop("timestamp")
print(json.dumps({"lines": lines, "frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()[0],
                  "srcfile": logging._srcfile is not None}))
"""


def _probe(mode: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_tuned_process_writes_the_same_lines() -> None:
    plain, tuned = _probe("plain"), _probe("tuned")
    assert tuned["lines"] == plain["lines"]
    assert len(plain["lines"]) == 3  # type: ignore[arg-type]
    assert "s3cret-token" not in json.dumps(tuned["lines"])


def test_tuned_process_freezes_the_start_and_collects_less_often() -> None:
    plain, tuned = _probe("plain"), _probe("tuned")
    assert plain["frozen"] == 0
    assert tuned["frozen"] > 10_000
    assert tuned["threshold"] == 5_000
    assert plain["threshold"] == 700
    assert plain["srcfile"] is True
    assert tuned["srcfile"] is False
