"""A Redis Cluster's settings, as tables: the URL shapes accepted and refused, the slot layout a Cluster
needs (the dead-letter stream in the stream's slot), and the URL shown with its password masked."""

from __future__ import annotations

import pytest

from bitrix_worker.config import load_settings
from bitrix_worker.errors import ConfigError
from bitrix_worker.redaction import redact_url
from bitrix_worker.redis.connection import check_cluster_layout, client_for, is_cluster_url
from bitrix_worker.urls import split_cluster_url


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://127.0.0.1:7000",
        "redis+cluster://user:pw@redis-1.internal:6379",
        "rediss+cluster://redis-1.internal:6380/",
        "redis+cluster://h:7000/0",
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7000,redis-3.internal",
        "rediss+cluster://app:pw@[::1]:7000,[::2]:7000/?ssl_cert_reqs=none",
    ],
)
def test_cluster_urls_accepted(url: str) -> None:
    assert load_settings(redis_url=url).redis_url == url
    assert is_cluster_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://h:7000/3", "only database 0"),
        ("redis+cluster://h:7000/?db=2", "only database 0"),
        ("redis+cluster://h:0", "bad port"),
        ("redis+cluster://h:7000,h2:99999", "bad port"),
        ("redis+cluster://h:7000,", "no host"),
        ("redis+cluster://h:7000,h 2:7000", "bad host"),
        ("redis+clusters://h:7000", "must start with"),
        ("cluster://h:7000", "must start with"),
    ],
)
def test_cluster_urls_refused(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as refused:
        load_settings(redis_url=url)
    assert refused.value.setting == "REDIS_URL"


@pytest.mark.parametrize(
    ("stream", "dead", "refused_setting"),
    [
        ("bitrix:operations", "{bitrix:operations}:dead", None),
        ("portal-42", "{portal-42}:dead", None),
        (
            "bitrix:operations",
            "bitrix:operations:dead",
            "BITRIX_WORKER_DEAD_STREAM",
        ),  # the default: not on a Cluster
        ("{a}b", "{{a}b}:dead", "BITRIX_WORKER_STREAM"),  # braces in the name: its keys hash elsewhere
    ],
)
def test_cluster_layout(stream: str, dead: str, refused_setting: str | None) -> None:
    settings = load_settings(redis_url="redis+cluster://h:7000", stream=stream, dead_stream=dead)
    if refused_setting is None:
        check_cluster_layout(settings.redis_url, settings.keys)
        return
    with pytest.raises(ConfigError) as refused:
        check_cluster_layout(settings.redis_url, settings.keys)
    assert refused.value.setting == refused_setting


def test_a_single_server_has_no_slots_to_check() -> None:
    settings = load_settings(redis_url="redis://h:6379/0")  # the default names, any layout
    check_cluster_layout(settings.redis_url, settings.keys)


def test_the_cluster_url_is_shown_with_its_password_masked() -> None:
    assert redact_url("redis+cluster://app:s3cret-pw@h:7000") == "redis+cluster://app:***@h:7000"


async def test_a_cluster_url_opens_a_cluster_client() -> None:
    client = client_for("redis+cluster://127.0.0.1:7000", name="x")
    try:
        assert type(client).__name__ == "RedisCluster"
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("url", "first", "nodes"),
    [
        ("redis+cluster://h:1", "redis://h:1", ["h:1"]),
        (
            "redis+cluster://u:p@w@h:1,g:2/0?x=1",
            "redis://u:p@w@h:1/0?x=1",
            ["h:1", "g:2"],
        ),  # '@' in a password
        ("rediss+cluster://[::1]:7000,h2", "rediss://[::1]:7000", ["[::1]:7000", "h2"]),
    ],
)
def test_a_cluster_url_splits_into_its_seeds(url: str, first: str, nodes: list[str]) -> None:
    assert split_cluster_url(url) == (first, nodes)
