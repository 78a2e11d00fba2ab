"""The portal registry: one row per portal in the mapping store's database (SQLite or PostgreSQL).

Why there: an integrator already runs that database for the mapping store, and both are per deployment; a
second store would be one more thing to back up and to lose. The table (``bitrix_portals``) sits next to
the mapping table and is opened the same way (``mapping_engine``: SQLite in a thread pool, PostgreSQL on the
loop).

Secrets (a webhook URL, an OAuth client secret, the access and refresh tokens, the application token) are
stored only as Fernet tokens (``secrets.SecretBox``); the raw row never holds one in clear. Ids, endpoints,
plan limits and state are plain, so ``portals list`` works without the key.

The OAuth pair is written by compare-and-set on ``token_version``: a refresh stores its new pair only if the
version it started from is still the stored one, so two writers can never interleave halves of two pairs, and
a late writer learns that someone else refreshed first (``store_tokens`` returns False).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
    update,
)
from sqlalchemy.engine import URL, Connection, Row, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from ..errors import RegistryError, StoreError
from ..mapping_engine import Runner, open_runner
from ..redaction import redact, redact_url
from .model import PLANS, OAuthTokens, PlanLimits, PortalRecord, PortalState
from .secrets import SecretBox

__all__ = ["DEFAULT_REGISTRY_TABLE", "PortalRegistry"]

DEFAULT_REGISTRY_TABLE = "bitrix_portals"
T = TypeVar("T")

# column name -> the record's secret it holds (encrypted)
_SECRET_COLUMNS = (
    "webhook_enc",
    "client_secret_enc",
    "access_token_enc",
    "refresh_token_enc",
    "app_token_enc",
)


def _database_url(database_url: str) -> URL:
    """The mapping store's reading of ``DATABASE_URL`` (``mapping._database_url``): PostgreSQL through
    asyncpg, SQLite through the standard module in a thread pool, nothing else."""
    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise StoreError("portal registry: DATABASE_URL is not a valid URL") from exc
    if url.get_backend_name() == "postgresql" or url.drivername == "postgres":
        return url.set(drivername="postgresql+asyncpg")
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite")
    raise StoreError(f"portal registry: unsupported database {url.drivername!r} (use sqlite or postgresql)")


def _table(name: str) -> Table:
    big = BigInteger().with_variant(Integer(), "sqlite")
    return Table(
        name,
        MetaData(),
        Column("portal_id", String(200), primary_key=True),
        Column("auth", String(16), nullable=False),
        Column("endpoint", String(1024), nullable=False),
        Column("plan", String(32), nullable=False),
        Column("burst", Integer, nullable=False),
        Column("rate_per_s", Float, nullable=False),
        Column("state", String(16), nullable=False, server_default="active"),
        Column("state_reason", String(500), nullable=False, server_default=""),
        Column("webhook_enc", Text, nullable=True),
        Column("client_id", String(255), nullable=True),
        Column("client_secret_enc", Text, nullable=True),
        Column("access_token_enc", Text, nullable=True),
        Column("refresh_token_enc", Text, nullable=True),
        Column("token_expires_at", big, nullable=True),
        Column("token_version", big, nullable=False, server_default="0"),
        Column("token_url", String(1024), nullable=False),
        Column("member_id", String(64), nullable=True),
        Column("app_token_enc", Text, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )


class PortalRegistry:
    """CRUD over the portals table; decrypts only when a caller needs a secret (``get``, ``tokens``)."""

    def __init__(self, runner: Runner, table: Table, safe_url: str, box: SecretBox | None) -> None:
        self._runner = runner
        self._t = table
        self._safe_url = safe_url
        self._box = box

    @classmethod
    async def connect(
        cls, database_url: str, *, box: SecretBox | None, table: str = DEFAULT_REGISTRY_TABLE
    ) -> PortalRegistry:
        """Open the database and create the table if missing. ``box`` may be None for commands that read
        no secret (``portals list``, pause, resume, remove); anything else then fails naming the setting."""
        url = _database_url(database_url)
        safe_url = redact_url(url.render_as_string(hide_password=False))
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
        try:
            runner = open_runner(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(
                f"portal registry {safe_url}: cannot create engine: {type(exc).__name__}"
            ) from exc
        registry = cls(runner, _table(table), safe_url, box)
        try:
            await registry._run("create table", runner.write, registry._t.metadata.create_all)
        except BaseException:
            await runner.close()
            raise
        return registry

    async def close(self) -> None:
        await self._runner.close()

    @property
    def table(self) -> Table:
        return self._t

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            SecretBox([])  # raises the ConfigError that names the setting
        assert self._box is not None
        return self._box

    # -- writes ------------------------------------------------------------------------------------------

    async def add(self, record: PortalRecord, *, replace: bool = False) -> None:
        """Insert the portal (RegistryError if its id exists), or overwrite it whole with ``replace``."""
        values = self._values(record)
        await self._run("add", self._runner.write, self._add, values, replace)

    def _add(self, conn: Connection, values: dict[str, Any], replace: bool) -> None:
        t = self._t
        if replace:
            conn.execute(delete(t).where(t.c.portal_id == values["portal_id"]))
        try:
            conn.execute(t.insert().values(**values))
        except IntegrityError:
            raise RegistryError(
                f"portal {values['portal_id']!r} is already registered (use --replace to overwrite it)"
            ) from None

    def _values(self, r: PortalRecord) -> dict[str, Any]:
        enc = self._encrypt
        now = datetime.now(UTC)
        tokens = r.tokens
        return {
            "portal_id": r.portal_id,
            "auth": r.auth,
            "endpoint": r.endpoint,
            "plan": r.plan.name,
            "burst": r.plan.burst,
            "rate_per_s": r.plan.rate_per_s,
            "state": r.state,
            "state_reason": r.state_reason[:500],
            "webhook_enc": enc(r.webhook_url),
            "client_id": r.client_id,
            "client_secret_enc": enc(r.client_secret),
            "access_token_enc": enc(tokens.access_token if tokens else None),
            "refresh_token_enc": enc(tokens.refresh_token if tokens else None),
            "token_expires_at": tokens.expires_at if tokens else None,
            "token_version": tokens.version if tokens else 0,
            "token_url": r.token_url,
            "member_id": r.member_id,
            "app_token_enc": enc(r.application_token),
            "created_at": now,
            "updated_at": now,
        }

    def _encrypt(self, secret: str | None) -> str | None:
        return None if not secret else self.box.encrypt(secret)

    async def set_state(self, portal_id: str, state: PortalState, reason: str = "") -> None:
        """Pause, resume or mark a portal auth-broken; RegistryError for an unknown id."""
        t = self._t
        stmt = (
            update(t)
            .where(t.c.portal_id == portal_id)
            .values(state=state, state_reason=reason[:500], updated_at=datetime.now(UTC))
        )
        if not await self._run("set state", self._runner.write, _rowcount, stmt):
            raise RegistryError(f"no portal {portal_id!r} in the registry")

    async def remove(self, portal_id: str) -> bool:
        t = self._t
        stmt = delete(t).where(t.c.portal_id == portal_id)
        return bool(await self._run("remove", self._runner.write, _rowcount, stmt))

    async def store_tokens(self, portal_id: str, new: OAuthTokens, *, expected_version: int) -> bool:
        """Store a refreshed pair as version ``expected_version + 1`` if the stored version is still
        ``expected_version``; False when another writer got there first (nothing written then)."""
        t = self._t
        stmt = (
            update(t)
            .where(t.c.portal_id == portal_id, t.c.token_version == expected_version)
            .values(
                access_token_enc=self.box.encrypt(new.access_token),
                refresh_token_enc=self.box.encrypt(new.refresh_token),
                token_expires_at=new.expires_at,
                token_version=expected_version + 1,
                updated_at=datetime.now(UTC),
            )
        )
        return bool(await self._run("store tokens", self._runner.write, _rowcount, stmt))

    async def rotate_secrets(self) -> int:
        """Re-encrypt every stored secret with the newest key (after a new key was put in front)."""
        return await self._run("rotate secrets", self._runner.write, self._rotate)

    def _rotate(self, conn: Connection) -> int:
        t = self._t
        done = 0
        for row in conn.execute(select(t.c.portal_id, *[t.c[c] for c in _SECRET_COLUMNS])).all():
            values = {
                c: self.box.rotate(row._mapping[c], what=f"{c} of {row.portal_id}")
                for c in _SECRET_COLUMNS
                if row._mapping[c]
            }
            if values:
                conn.execute(update(t).where(t.c.portal_id == row.portal_id).values(**values))
                done += 1
        return done

    # -- reads -------------------------------------------------------------------------------------------

    async def get(self, portal_id: str) -> PortalRecord:
        """The portal with its secrets decrypted; RegistryError for an unknown id."""
        row = await self._row(portal_id)
        return self._record(row, decrypt=True)

    async def find(self, portal_id: str) -> PortalRecord | None:
        t = self._t
        row = await self._run("get", self._runner.read, _first, select(t).where(t.c.portal_id == portal_id))
        return None if row is None else self._record(row, decrypt=True)

    async def ping(self) -> bool:
        """True when the registry's table answers a trivial query (a multi-portal worker's ``/readyz``)."""
        try:
            await self._run("ping", self._runner.read, _first, select(self._t.c.portal_id).limit(1))
        except StoreError:
            return False
        return True

    async def records(self) -> list[PortalRecord]:
        """Every portal without its secrets (no key needed): ids, endpoints, plans and states."""
        t = self._t
        rows: list[Row[Any]] = await self._run(
            "list", self._runner.read, _all, select(t).order_by(t.c.portal_id)
        )
        return [self._record(row, decrypt=False) for row in rows]

    async def tokens(self, portal_id: str) -> tuple[OAuthTokens, PortalState]:
        """The stored OAuth pair and the portal's state (the token manager's re-read after a lock)."""
        t = self._t
        stmt = select(
            t.c.access_token_enc,
            t.c.refresh_token_enc,
            t.c.token_expires_at,
            t.c.token_version,
            t.c.state,
        ).where(t.c.portal_id == portal_id)
        row = await self._run("read tokens", self._runner.read, _first, stmt)
        if row is None:
            raise RegistryError(f"no portal {portal_id!r} in the registry")
        if not row.access_token_enc or not row.refresh_token_enc:
            raise RegistryError(f"portal {portal_id!r} has no OAuth tokens")
        box = self.box
        pair = OAuthTokens(
            box.decrypt(row.access_token_enc, what=f"the access token of {portal_id}"),
            box.decrypt(row.refresh_token_enc, what=f"the refresh token of {portal_id}"),
            row.token_expires_at,
            int(row.token_version),
        )
        return pair, row.state

    async def _row(self, portal_id: str) -> Row[Any]:
        t = self._t
        stmt = select(t).where(t.c.portal_id == portal_id)
        row: Row[Any] | None = await self._run("get", self._runner.read, _first, stmt)
        if row is None:
            raise RegistryError(f"no portal {portal_id!r} in the registry")
        return row

    def _record(self, row: Row[Any], *, decrypt: bool) -> PortalRecord:
        m = row._mapping
        pid = m["portal_id"]

        def dec(column: str, what: str) -> str | None:
            value = m[column]
            if not decrypt or not value:
                return None
            return self.box.decrypt(value, what=f"{what} of {pid}")

        access, refresh = (
            dec("access_token_enc", "the access token"),
            dec("refresh_token_enc", "the refresh token"),
        )
        plan = PLANS.get(m["plan"])
        if plan is None or (plan.burst, plan.rate_per_s) != (m["burst"], m["rate_per_s"]):
            plan = PlanLimits(m["plan"], int(m["burst"]), float(m["rate_per_s"]))
        tokens = None
        if access and refresh:
            tokens = OAuthTokens(access, refresh, m["token_expires_at"], int(m["token_version"]))
        return PortalRecord(
            portal_id=pid,
            auth=m["auth"],
            endpoint=m["endpoint"],
            plan=plan,
            state=m["state"],
            state_reason=m["state_reason"] or "",
            webhook_url=dec("webhook_enc", "the webhook URL"),
            client_id=m["client_id"],
            client_secret=dec("client_secret_enc", "the client secret"),
            tokens=tokens,
            token_url=m["token_url"],
            member_id=m["member_id"],
            application_token=dec("app_token_enc", "the application token"),
        )

    # -- error boundary ----------------------------------------------------------------------------------

    async def _run(self, what: str, how: Callable[..., Awaitable[T]], fn: Callable[..., T], *args: Any) -> T:
        try:
            return await how(fn, *args)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300] if str(exc) else ""
            message = f"portal registry {self._safe_url}: {what} failed: {type(exc).__name__}: {detail}"
            raise StoreError(redact(message)) from None


def _rowcount(conn: Connection, stmt: Any) -> int:
    return int(conn.execute(stmt).rowcount)


def _first(conn: Connection, stmt: Any) -> Row[Any] | None:
    return conn.execute(stmt).first()


def _all(conn: Connection, stmt: Any) -> list[Row[Any]]:
    return list(conn.execute(stmt).all())
