"""Async client for the emulator's ``/_emulator/`` endpoints (tests, benchmarks, the demo)."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from ..errors import EmulatorError
from .faults import FaultConfig


class EmulatorAdmin:
    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/_emulator", timeout=timeout_s)

    async def _call(self, method: str, path: str, body: Any = None, *, ok404: bool = False) -> Any:
        response = await self._client.request(method, path, json=body)
        if response.status_code >= 400 and not (ok404 and response.status_code == 404):
            detail = f"HTTP {response.status_code} {response.text[:500]}"
            raise EmulatorError(f"{method} /_emulator{path}: {detail}")
        return response.json()

    async def stats(self) -> dict[str, Any]:
        """``{"requests": N, "calls": {method: {outcome: n}}, "faults_injected", "entities", ...}``."""
        data: dict[str, Any] = await self._call("GET", "/stats")
        return data

    async def entities(self, entity: str) -> list[dict[str, Any]]:
        """Every stored row of ``entity`` (deal, contact, company, lead, quote), UPPER_CASE, including what
        ``get`` does not show (a deal's ``CONTACT_IDS``)."""
        data = await self._call("GET", f"/entities/{entity}")
        items: list[dict[str, Any]] = data["items"]
        return items

    async def items(self, entity_type_id: int) -> list[dict[str, Any]]:
        """Every item of one entityTypeId as ``crm.item.get`` shows it (camelCase, typed values)."""
        data = await self._call("GET", f"/items/{int(entity_type_id)}")
        found: list[dict[str, Any]] = data["items"]
        return found

    async def product_rows(
        self, owner_type: str | None = None, owner_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Product rows (camelCase, with ``ownerType``/``ownerId``): all, or one owner's in its order."""
        query = {k: str(v) for k, v in (("ownerType", owner_type), ("ownerId", owner_id)) if v is not None}
        response = await self._client.get("/productrows", params=query)
        if response.status_code >= 400:
            raise EmulatorError(f"GET /_emulator/productrows: HTTP {response.status_code}")
        rows: list[dict[str, Any]] = response.json()["rows"]
        return rows

    async def delete_entity(self, entity: str, entity_id: int) -> bool:
        """Delete a row behind the API's back (a user deleting it in Bitrix24); False if it did not exist."""
        data = await self._call("POST", f"/entities/{entity}/{int(entity_id)}/delete", ok404=True)
        return bool(data.get("deleted"))

    async def reset(self, *, keep_faults: bool = False, keep_limits: bool = False) -> None:
        await self._call("POST", "/reset", {"keep_faults": keep_faults, "keep_limits": keep_limits})

    async def faults(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("GET", "/faults")
        return data

    async def set_faults(
        self, config: FaultConfig | Mapping[str, Any] | None = None, **parts: Any
    ) -> dict[str, Any]:
        """Change the given parts (``rules``, ``latency``, ``auth_outage``, ``hang_s``); others stay."""
        if isinstance(config, FaultConfig):
            body: dict[str, Any] = config.model_dump(mode="json", exclude_unset=True)
        else:
            body = dict(config or {})
        body.update(parts)
        data: dict[str, Any] = await self._call("POST", "/faults", body)
        return data

    async def clear_faults(self) -> dict[str, Any]:
        return await self.set_faults(rules=[], latency=None, auth_outage=None)

    async def limits(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("GET", "/limits")
        return data

    async def set_limits(self, **changes: Any) -> dict[str, Any]:
        """Change burst, drain_per_s, operating_limit_s, operating_window_s, processing_s, limits_enabled."""
        data: dict[str, Any] = await self._call("POST", "/limits", changes)
        return data

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> EmulatorAdmin:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
