"""``redact_url`` masks exactly the secret-bearing parts of any URL; ``redact`` masks secrets in free text
without mangling the words around a short one. Tables for the shapes seen in the field, properties for the
rest: a credential (13+ characters, as Bitrix24's 16-character secrets are) never survives.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bitrix_worker.redaction import WebhookUrl, redact, redact_url
from bitrix_worker.redis.connection import safe_redis_url

S = "abcdef0123456789"  # the shape of a real webhook secret


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://p.bitrix24.ru/rest/1/{S}/", "https://p.bitrix24.ru/rest/1/***/"),
        (f"https://p.bitrix24.ru/rest/1/{S}", "https://p.bitrix24.ru/rest/1/***"),
        (f"https://p.bitrix24.ru/REST/1/{S}/", "https://p.bitrix24.ru/REST/1/***/"),
        (f"https://p.bitrix24.ru/rest/admin/{S}/", "https://p.bitrix24.ru/rest/admin/***/"),
        (f"https://p.bitrix24.ru/rst/1/{S}/", "https://p.bitrix24.ru/rst/1/***/"),
        (f"https://p.bitrix24.ru/rest/{S}/", "https://p.bitrix24.ru/rest/***/"),
        (f"https://p.bitrix24.ru/rest/api/1/{S}/", "https://p.bitrix24.ru/rest/api/1/***/"),
        (f"https://p.bitrix24.ru/rest/1/{S}/crm.deal.add", "https://p.bitrix24.ru/rest/1/***/crm.deal.add"),
        (f"https://p.bitrix24.ru:8443/rest/1/{S}/", "https://p.bitrix24.ru:8443/rest/1/***/"),
        (f"htps://p.bitrix24.ru/rest/1/{S}/", "htps://p.bitrix24.ru/rest/1/***/"),
        (f"p.bitrix24.ru/rest/1/{S}/", "p.bitrix24.ru/rest/1/***/"),
        (S, "***"),
        (f"https://p.bitrix24.ru/rest/1/{S}/?auth={S}&x=1", "https://p.bitrix24.ru/rest/1/***/?auth=***&x=1"),
        (
            f"https://p.example/oauth?access_token={S}#token={S}",
            "https://p.example/***?access_token=***#token=***",
        ),
        (f"https://{S}@p.example/x", "https://***@p.example/***"),
        ("https://p.bitrix24.ru/rest/", "https://p.bitrix24.ru/rest/"),
        (f"redis://:{S}@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
        (f"rediss://user:{S}@redis.internal/2", "rediss://user:***@redis.internal/2"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        (f"unix:///run/redis.sock?db=1&password={S}", "unix:///run/redis.sock?db=1&password=***"),
        (f"postgresql+asyncpg://app:{S}@db:5432/crm", "postgresql+asyncpg://app:***@db:5432/crm"),
        (
            "sqlite+aiosqlite:///var/lib/bitrix-worker.sqlite3",
            "sqlite+aiosqlite:///var/lib/bitrix-worker.sqlite3",
        ),
    ],
)
def test_redact_url_masks_only_the_secret_parts(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "bad", [f"https://p/REST/1/{S}/", f"https://p/rest/admin/{S}/", f"https://p/rst/1/{S}/"]
)
def test_a_mistyped_webhook_is_refused_without_its_secret(bad: str) -> None:
    with pytest.raises(ValueError, match="expected https://<portal>/rest/<user_id>/<secret>/") as info:
        WebhookUrl.parse(bad)
    assert S not in str(info.value)
    assert redact_url(bad) in str(info.value)  # ... but with host and path, so the typo shows


def test_safe_redis_url_delegates() -> None:
    assert safe_redis_url(f"redis://u:{S}@h:6379/0?password={S}") == "redis://u:***@h:6379/0?password=***"


def test_free_text_masks_urls_of_any_common_shape() -> None:
    text = (
        f"POST https://p/REST/1/{S}/crm.deal.add failed; redis://:{S}@h/0; "
        f"https://p/rest/{S}/; https://p/x?access_token={S}&page=2"
    )
    out = redact(text)
    assert S not in out
    assert "https://p/REST/1/***/crm.deal.add" in out
    assert "page=2" in out


@pytest.mark.parametrize(
    ("text", "secret", "out"),
    [
        ("bitrix_worker.sending", "e", "bitrix_worker.sending"),
        ("logger=bitrix_worker key=e", "e", "logger=bitrix_worker key=***"),
        ("/rest/1/e/crm.deal.add", "e", "/rest/1/***/crm.deal.add"),
        ("contains pw-123 here", "pw-123", "contains *** here"),
        (f"encoded %2F{S}%2F", S, "encoded %2F***%2F"),  # a long secret goes even inside a longer token
    ],
)
def test_known_secrets_are_masked_exactly(text: str, secret: str, out: str) -> None:
    assert redact(text, [secret]) == out


# ---- properties ------------------------------------------------------------------------------------------

credential = st.one_of(
    st.from_regex(r"[a-z0-9]{16}", fullmatch=True), st.from_regex(r"[A-Za-z0-9_-]{13,40}", fullmatch=True)
)
host = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True)
scheme = st.sampled_from(["https", "http", "htps", "HTTPS", "ftp", "redis", "rediss", "postgresql", "x-y"])
plain = st.one_of(
    st.from_regex(r"[0-9]{1,12}", fullmatch=True),
    st.from_regex(r"[A-Za-z]{1,10}", fullmatch=True),
    st.sampled_from(["rest", "REST", "rst", "api", "admin", "crm.deal.add", "batch", "crm.item.list.json"]),
)
token_name = st.sampled_from(
    ["auth", "AUTH", "access_token", "refresh_token", "password", "api_key", "sessid"]
)


@settings(max_examples=200, deadline=None)
@given(
    secret=credential,
    sch=st.sampled_from(["https", "http", "htps", "HTTPS", "ftp", "x-y"]),
    netloc=host,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    before=st.lists(plain, max_size=4),
    after=st.lists(plain, max_size=3),
    slash=st.booleans(),
)
def test_a_secret_path_segment_never_survives(
    *, secret: str, sch: str, netloc: str, port: int | None, before: list[str], after: list[str], slash: bool
) -> None:
    assume(secret not in netloc)
    authority = netloc if port is None else f"{netloc}:{port}"
    path = "/".join(["", *before, secret, *after]) + ("/" if slash else "")
    url = f"{sch}://{authority}{path}"
    assert secret not in redact_url(url)
    assert secret not in redact_url(f"{authority}{path}")  # pasted without a scheme
    assert redact_url(url).lower().startswith(f"{sch}://{authority}/".lower())  # the host stays visible


@settings(max_examples=200, deadline=None)
@given(
    secret=credential, sch=scheme, netloc=host, user=st.from_regex(r"[a-z]{0,8}", fullmatch=True), db=plain
)
def test_a_userinfo_password_never_survives(secret: str, sch: str, netloc: str, user: str, db: str) -> None:
    assume(secret not in netloc and secret not in db)
    url = f"{sch}://{user}:{secret}@{netloc}:6379/{db}"
    for shown in (redact_url(url), redact(f"connecting to {url} failed")):
        assert secret not in shown
        assert netloc in shown


@settings(max_examples=200, deadline=None)
@given(
    secret=credential, sch=scheme, netloc=host, name=token_name, where=st.sampled_from(["?", "?a=1&", "#"])
)
def test_a_token_parameter_never_survives(secret: str, sch: str, netloc: str, name: str, where: str) -> None:
    assume(secret not in netloc)
    url = f"{sch}://{netloc}/some/path{where}{name}={secret}"
    assert secret not in redact_url(url)
    assert secret not in redact(f"GET {url} -> 401")


@settings(max_examples=200, deadline=None)
@given(secret=st.text(min_size=1, max_size=40), text=st.text(max_size=200))
def test_a_known_secret_never_survives_free_text(secret: str, text: str) -> None:
    """Long secrets vanish entirely; short ones never remain standing alone as a token."""
    assume(secret not in "***")  # a "secret" made of the mask itself is still there after masking
    embedded = f"{text} {secret} {text}"
    out = redact(embedded, [secret])
    if len(secret) >= 8:
        assert secret not in out
    else:
        alone = re.compile(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])")
        assert not alone.search(out)
