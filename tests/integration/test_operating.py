"""Operating it without guessing: the start-up check, the portal's pause seen and controlled, a clean stop
while paused, deregistration, success lines, and the outcomes stream read back as a shop would."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from typing import Any

import pytest
from harness import Bench, settings_env
from typer.testing import CliRunner, Result

from bitrix_worker.cli import app
from bitrix_worker.logs import configure_logging
from bitrix_worker.redis.workers import WorkerRegistry
from bitrix_worker.worker import Worker


async def cli(env: dict[str, str], *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


@pytest.mark.parametrize(
    ("url_change", "expected"),
    [
        (lambda u: u.replace("/rest/1/", "/rest/1/x"), "INVALID_CREDENTIALS"),  # a wrong secret
        (lambda u: u.replace("/rest/1/", "/rst/1/"), "expected https://"),  # a typo in the path
        (lambda u: u.replace("127.0.0.1:", "127.0.0.1:1"), "cannot reach"),  # nothing listens there
    ],
)
async def test_run_checks_the_webhook_first_and_says_what_is_wrong_in_one_line(
    bench: Bench, url_change: Any, expected: str
) -> None:
    env = settings_env(bench.settings)
    bad = url_change(env["BITRIX_WEBHOOK_URL"])
    if "127.0.0.1:1" in bad:  # port 1xxxxx is not a port: pick a closed one instead
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        bad = env["BITRIX_WEBHOOK_URL"].replace(f":{bench.emulator.port}/", f":{closed}/")
    env["BITRIX_WEBHOOK_URL"] = bad
    result = await cli(env, "run", "--until-idle")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "BITRIX_WEBHOOK_URL" in lines[0]
    assert expected in lines[0]
    secret = bench.settings.webhook.secret
    assert secret not in result.output + result.stderr


async def test_run_no_check_skips_the_test_call(bench: Bench) -> None:
    env = settings_env(bench.settings)

    async def run(*flags: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bitrix_worker", "run", "--until-idle", *flags, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return await asyncio.wait_for(proc.wait(), 30)

    assert await run("--no-check") == 0
    assert await bench.total_calls("crm.deal.fields") == 0
    assert await run() == 0
    assert await bench.total_calls("crm.deal.fields") == 1


async def test_the_start_check_is_the_deal_schemas_first_request(bench: Bench) -> None:
    # The check asks what the deal schema's first request asks (fields, currencies, pipelines); field
    # validation starts from those answers and asks only the status lists: two reads before the first
    # batch instead of three.
    await bench.enqueue("create", "s-1", {"TITLE": "x", "CURRENCY_ID": "USD"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bitrix_worker", "run", "--until-idle", env=settings_env(bench.settings),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    stats = await bench.admin.stats()
    assert stats["calls"]["crm.deal.fields"] == {"ok": 1}
    assert stats["calls"]["crm.deal.add"] == {"ok": 1}
    assert stats["requests"] == 3, stats  # the check, the status lists, the create
    assert len(await bench.entities()) == 1


async def test_an_operator_pauses_and_resumes_the_portal_and_reset_resumes_at_once(bench: Bench) -> None:
    env = settings_env(bench.settings)
    paused = await cli(env, "portal", "pause", "--reason", "maintenance window", "--json")
    assert paused.exit_code == 0, paused.output
    assert (json.loads(paused.output)["open"], json.loads(paused.output)["manual"]) == (True, True)
    shown = await cli(env, "portal", "status")
    assert "PAUSED by an operator: maintenance window" in shown.output
    await bench.enqueue("create", "held", {"TITLE": "x"})
    async with Worker.open(bench.settings) as worker:
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(1.5)  # paused: nothing is sent, not even a probe
        assert (await bench.admin.stats())["requests"] == 0
        reset = await cli(env, "portal", "reset", "--json")
        assert json.loads(reset.output)["open"] is False
        for _ in range(100):
            if await bench.entities():
                break
            await asyncio.sleep(0.05)
        worker.stop()
        await asyncio.wait_for(task, 10)
    assert len(await bench.entities()) == 1
    assert "open (consuming)" in (await cli(env, "portal", "status")).output


async def test_sigterm_while_paused_exits_within_two_seconds_sending_nothing(bench: Bench) -> None:
    await bench.admin.set_faults(auth_outage={"start_s": 0})
    for i in range(5):
        await bench.enqueue("create", f"p-{i}", {"TITLE": "x"})
    async with Worker.open(bench.settings.model_copy(update={"breaker_cooldown_s": 30.0})) as worker:
        task = asyncio.create_task(worker.run())
        for _ in range(100):
            if (await worker.portal.gate.state()).open:
                break
            await asyncio.sleep(0.05)
        assert (await worker.portal.gate.state()).open
        sent = (await bench.admin.stats())["requests"]
        started = time.monotonic()
        worker.stop()  # what SIGTERM does
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 2.0
    assert (await bench.admin.stats())["requests"] == sent
    assert await bench.dead() == []
    assert await WorkerRegistry(bench.redis, bench.settings.keys.workers).last_seen() == {}  # it left


@pytest.mark.parametrize("successes", [True, False])
async def test_successes_are_logged_at_info_unless_quieted(bench: Bench, successes: bool) -> None:
    buffer = io.StringIO()
    configure_logging(fmt="json", level="info", secrets=[bench.settings.webhook.secret], stream=buffer)
    await bench.enqueue("create", "logged", {"TITLE": "x"})
    await bench.run(log_successes=successes)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    applied = [line for line in lines if line.get("event") == "applied"]
    if not successes:
        assert applied == []
        return
    (line,) = applied
    assert line["level"] == "info"
    assert {k: line[k] for k in ("op", "entity", "key", "attempts")} == {
        "op": "create", "entity": "deal", "key": "logged", "attempts": 0,
    }  # fmt: skip
    assert line["bitrix_id"] > 0
    assert line["stream_id"]


async def test_a_shop_reads_its_results_back_from_the_outcomes_stream_with_a_consumer_group(
    bench: Bench,
) -> None:
    """The documented contract: XREADGROUP on `{<stream>}:outcomes`; each entry names the producer's stream
    id, the key, the outcome with its reason code, and the Bitrix24 id to store on the order."""
    ids = {await bench.enqueue("create", f"shop-{i}", {"TITLE": "x"}): f"deal:shop-{i}" for i in range(3)}
    await bench.run()
    outcomes = bench.settings.keys.outcomes
    await bench.redis.xgroup_create(outcomes, "shop", id="0")
    rows = await bench.redis.xreadgroup("shop", "shop-1", {outcomes: ">"}, count=10)
    records = [{k.decode(): v.decode() for k, v in f.items()} for _, f in rows[0][1]]
    assert {r["stream_id"]: r["ident"] for r in records} == ids
    deals = {d["ORIGIN_ID"]: d["ID"] for d in await bench.entities()}
    for r in records:
        assert (r["outcome"], r["code"], r["op"]) == ("applied", "created", "create")
        assert r["bitrix_id"] == str(deals[r["ident"].split(":", 1)[1]])
        assert int(r["at_ms"]) > 0
    await bench.redis.xack(outcomes, "shop", *[i for i, _ in rows[0][1]])
