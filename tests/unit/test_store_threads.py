"""The SQLite store's threads (``mapping_engine.StoreThreads``): results and errors reach the awaiting
coroutine, no more threads than asked start, a call cancelled before a thread takes it never runs, and
shutdown waits for the threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bitrix_worker.mapping_engine import StoreThreads


async def _run(threads: StoreThreads, call: object) -> object:
    done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    threads.submit(done, call)  # type: ignore[arg-type]
    return await done


async def test_results_and_errors_reach_the_caller() -> None:
    threads = StoreThreads(2, "store-test")
    try:
        assert await _run(threads, lambda: threading.current_thread().name) == "store-test_0"

        def broken() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await _run(threads, broken)
    finally:
        threads.shutdown()


async def test_no_more_threads_than_asked_and_queued_calls_wait_their_turn() -> None:
    threads = StoreThreads(3, "store-test")
    release = threading.Event()
    names: list[str] = []

    def held() -> str:
        release.wait(5)
        names.append(threading.current_thread().name)
        return "done"

    try:
        calls = [asyncio.ensure_future(_run(threads, held)) for _ in range(8)]
        await asyncio.sleep(0.05)
        release.set()
        assert await asyncio.gather(*calls) == ["done"] * 8
        assert set(names) == {"store-test_0", "store-test_1", "store-test_2"}
    finally:
        threads.shutdown()
    assert not any(t.name.startswith("store-test") for t in threading.enumerate())


async def test_a_call_cancelled_before_it_starts_never_runs() -> None:
    threads = StoreThreads(1, "store-test")
    release = threading.Event()
    ran: list[str] = []
    try:
        busy = asyncio.ensure_future(_run(threads, lambda: release.wait(5)))
        waiting = asyncio.ensure_future(_run(threads, lambda: ran.append("late")))
        await asyncio.sleep(0.05)
        waiting.cancel()
        release.set()
        assert await busy is True
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await _run(threads, lambda: "next") == "next"
        assert ran == []
    finally:
        threads.shutdown()
