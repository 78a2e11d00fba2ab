"""Product rows: ``crm.item.productrow.set|list`` and the deprecated ``crm.<deal|lead|quote>.productrows.*``.

Both ``set`` methods replace the owner's whole row set. The newer one takes ``ownerType`` (``D``, ``L``,
``Q``, ``SI``, ``T<hex entityTypeId>``) and ``ownerId``, answers every saved row (camelCase, with ids) and
has typed errors (``OWNER_NOT_FOUND``, ``ENTITY_TYPE_NOT_SUPPORTED``, ``INVALID_ARG_VALUE``, ``100``);
``list`` needs ``=ownerType`` and ``=ownerId`` in its filter (``REQUIRED_ARG_MISSING``) and answers
``ACCESS_DENIED`` for an owner that does not exist. The old ones answer ``true`` and UPPER_CASE rows, read
the id with PHP's ``(int)`` (so an array id is 1), treat a *missing* ``rows`` as an empty set — which clears
the deal — and fail with empty-code or ``ERROR_CORE`` errors. A row keeps its id when ``set`` passes the
id of one of the owner's rows; other rows get new ids. Deleting an owner deletes its rows. When the owner's
amount is not manual, saving rows recalculates it from the rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..crm import to_camel
from .errors import ApiError, bad_request, engine_error
from .items import SHARED, SMART_INVOICE, ItemStore, array_param, int_param
from .php import php_int
from .store import PAGE_SIZE, Result

_FIXED = {"L": 1, "D": 2, "Q": 7, "SI": SMART_INVOICE}
_CODES = {v: k for k, v in _FIXED.items()}
_OLD_OWNERS = {"deal": 2, "lead": 1, "quote": 7}
_INPUT = frozenset(
    {"id", "productId", "productName", "price", "quantity", "discountTypeId", "discountRate", "discountSum"}
    | {"taxRate", "taxIncluded", "taxName", "measureCode", "measureName", "sort"}
)
_NOT_SUPPORTED = ("ENTITY_TYPE_NOT_SUPPORTED", "Working with this type of objects is not supported")
_PERCENT = "Percentage Discount Type (DISCOUNT_TYPE_ID) is defined"
_CORE = {
    "rate": f"Discount Rate (DISCOUNT_RATE) is required if {_PERCENT}",
    "full": f"Discount Sum (DISCOUNT_SUM) is required if {_PERCENT} and Discount Rate (DISCOUNT_RATE)"
    " is 100%",
    "sum": "Discount Sum (DISCOUNT_SUM) is required if Monetary Discount Type (DISCOUNT_TYPE_ID) is defined",
}


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value) if value not in (None, "") and not isinstance(value, list | dict) else default
    except (TypeError, ValueError):
        return default


def _num(value: float) -> float | int:
    """Round away float noise; whole numbers as ints (``9`` rather than ``9.0``, as the portal writes)."""
    value = round(float(value), 8)
    return int(value) if value.is_integer() else value


def _tax(raw: Any) -> float | int | None:
    """A tax rate that is not above 0 and not literally ``0`` is stored as null (as the proxy does)."""
    value = _float(raw, -1.0)
    if value > 0 or (value == 0 and str(raw).strip()[:1] == "0"):
        return _num(value)
    return None


@dataclass(slots=True)
class RowTable:
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # row id -> row (camelCase, owner incl.)
    by_owner: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    next_id: int = 1


def _priced(row: dict[str, Any]) -> dict[str, Any]:
    """The derived prices, from the final unit price (after discount, tax included) as the docs define it."""
    price, tax = row["price"], row["taxRate"] or 0.0
    exclusive = price / (1 + tax / 100)
    if row["discountTypeId"] == 1:
        netto = exclusive + row["discountSum"]
        row["discountRate"] = _num(row["discountSum"] / netto * 100) if netto else 0
    else:
        rate = row["discountRate"]
        netto = exclusive / (1 - rate / 100) if rate < 100 else exclusive + row["discountSum"]
        row["discountSum"] = _num(netto - exclusive)
    row.update(
        priceAccount=_num(price),
        priceExclusive=_num(exclusive),
        priceNetto=_num(netto),
        priceBrutto=_num(netto * (1 + tax / 100)),
    )
    return row


def _old_view(row: dict[str, Any]) -> dict[str, Any]:
    """A row as ``crm.deal.productrows.get`` shows it (mixed types, as in the docs' sample)."""
    return {
        "ID": str(row["id"]),
        "OWNER_ID": str(row["ownerId"]),
        "OWNER_TYPE": row["ownerType"],
        "PRODUCT_ID": row["productId"],
        "PRODUCT_NAME": row["productName"],
        "ORIGINAL_PRODUCT_NAME": row["productName"],
        "PRODUCT_DESCRIPTION": None,
        "PRICE": row["price"],
        "PRICE_EXCLUSIVE": row["priceExclusive"],
        "PRICE_NETTO": row["priceNetto"],
        "PRICE_BRUTTO": row["priceBrutto"],
        "PRICE_ACCOUNT": f"{row['priceAccount']:.2f}",
        "QUANTITY": row["quantity"],
        "DISCOUNT_TYPE_ID": row["discountTypeId"],
        "DISCOUNT_RATE": row["discountRate"],
        "DISCOUNT_SUM": row["discountSum"],
        "TAX_RATE": row["taxRate"],
        "TAX_INCLUDED": row["taxIncluded"],
        "CUSTOMIZED": row["customized"],
        "MEASURE_CODE": row["measureCode"],
        "MEASURE_NAME": row["measureName"],
        "SORT": row["sort"],
        "XML_ID": row["xmlId"],
        "TYPE": row["type"],
        "STORE_ID": row["storeId"],
    }


def _old_check(row: dict[str, Any]) -> None:
    """The old API's discount rules (checked only when ``DISCOUNT_TYPE_ID`` is given), as ERROR_CORE."""
    kind = row.get("discountTypeId")
    if kind is None:
        return
    problem = None
    if php_int(kind) == 2 and row.get("discountRate") is None:
        problem = "rate"
    elif php_int(kind) == 2 and _float(row.get("discountRate")) >= 100 and row.get("discountSum") is None:
        problem = "full"
    elif php_int(kind) == 1 and row.get("discountSum") is None:
        problem = "sum"
    if problem is not None:
        raise ApiError(400, "ERROR_CORE", _CORE[problem] + "<br>")


class ProductRows:
    def __init__(self, items: ItemStore) -> None:
        self.items = items
        self.table = RowTable()
        items.crm.on_remove = self.owner_removed

    def reset(self) -> None:
        self.table = RowTable()

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Result]]:
        out: dict[str, Callable[[dict[str, Any]], Result]] = {
            "crm.item.productrow.set": self.item_set,
            "crm.item.productrow.list": self.item_list,
        }
        for entity, etid in _OLD_OWNERS.items():
            out[f"crm.{entity}.productrows.set"] = partial(self.old_set, etid)
            out[f"crm.{entity}.productrows.get"] = partial(self.old_get, etid)
        return out

    # -- storage --------------------------------------------------------------------------------------

    def owner_code(self, etid: int) -> str:
        return _CODES.get(etid) or f"T{etid:x}"

    def rows_of(self, etid: int, owner_id: int) -> list[dict[str, Any]]:
        ids = self.table.by_owner.get((etid, owner_id), [])
        rows = [self.table.rows[i] for i in ids]
        return sorted(rows, key=lambda r: (r["sort"], r["id"]))

    def owner_removed(self, entity: str, owner_id: int) -> None:
        etid = _OLD_OWNERS.get(entity) or (int(entity[5:]) if entity.startswith("item:") else 0)
        for row_id in self.table.by_owner.pop((etid, owner_id), []):
            self.table.rows.pop(row_id, None)

    def _normalise(self, etid: int, owner_id: int, raw: dict[str, Any]) -> dict[str, Any]:
        given = {k: v for k, v in raw.items() if k in _INPUT}
        tax = given.get("taxRate")
        keep = php_int(given.get("id"))
        old = self.table.rows.get(keep)
        same_owner = old is not None and (old["_etid"], old["ownerId"]) == (etid, owner_id)
        row = {
            "id": keep if same_owner else 0,
            "ownerId": owner_id,
            "ownerType": self.owner_code(etid),
            "productId": php_int(given.get("productId")),
            "productName": str(given.get("productName") or ""),
            "price": _num(_float(given.get("price"))),
            "quantity": _num(_float(given.get("quantity"), 1.0)),
            "discountTypeId": php_int(given.get("discountTypeId", 2)) or 2,
            "discountRate": _num(_float(given.get("discountRate"))),
            "discountSum": _num(_float(given.get("discountSum"))),
            "taxRate": _tax(tax),
            "taxIncluded": "Y" if str(given.get("taxIncluded", "N")).upper() == "Y" else "N",
            "taxName": str(given.get("taxName") or ("No VAT" if not tax else f"VAT {tax}")),
            "customized": "Y",
            "measureCode": php_int(given.get("measureCode")),
            "measureName": str(given.get("measureName") or ""),
            "sort": php_int(given.get("sort")),
            "xmlId": "",
            "type": 1,
            "storeId": None,
            "_etid": etid,
        }
        return _priced(row)

    def _replace(self, etid: int, owner_id: int, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        table = self.table
        for row_id in table.by_owner.pop((etid, owner_id), []):
            table.rows.pop(row_id, None)
        ids = []
        for row in rows:
            if not row["id"] or row["id"] in ids:
                row["id"] = table.next_id
                table.next_id += 1
            if not row["productName"] and not row["productId"]:
                row["productName"] = f"[{row['id']}]"
            table.rows[row["id"]] = row
            ids.append(row["id"])
        table.by_owner[(etid, owner_id)] = ids
        self._recalculate(etid, owner_id)
        return self.rows_of(etid, owner_id)

    def _recalculate(self, etid: int, owner_id: int) -> None:
        """Without a manual amount, the owner's amount becomes the sum of its rows."""
        total = sum(r["price"] * r["quantity"] for r in self.rows_of(etid, owner_id))
        if etid in SHARED:
            owner = self.items.crm.tables[SHARED[etid]].rows[owner_id]
            if owner.get("IS_MANUAL_OPPORTUNITY") != "Y" and "OPPORTUNITY" in owner:
                owner["OPPORTUNITY"] = f"{total:.2f}"
        else:
            item = self.items.tables[etid].rows[owner_id]
            if item.get("isManualOpportunity") != "Y":
                item["opportunity"] = _num(total)

    @staticmethod
    def item_view(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if not k.startswith("_")}

    # -- crm.item.productrow.* ------------------------------------------------------------------------

    def _owner(self, code: Any) -> int:
        text = str(code).upper()
        if text in _FIXED:
            return _FIXED[text]
        if text.startswith("T") and len(text) > 1:
            try:
                etid = int(text[1:], 16)
            except ValueError:
                etid = 0
            smart = self.items.types.get(etid)
            if smart is not None and smart.products:
                return etid
        raise engine_error(*_NOT_SUPPORTED)

    def item_set(self, params: dict[str, Any]) -> Result:
        owner_id = int_param(params, "ownerId")
        if params.get("ownerType") is None:
            raise engine_error(100, "Could not find value for parameter {ownerType}")
        rows = list(array_param(params, "productRows").values())
        etid = self._owner(params["ownerType"])
        if not self.items.exists(etid, owner_id):
            raise engine_error("OWNER_NOT_FOUND", "Owner was not found")
        if not all(isinstance(r, dict) for r in rows):
            raise engine_error("INVALID_ARG_VALUE", "Product row must be an object")
        saved = self._replace(etid, owner_id, [self._normalise(etid, owner_id, r) for r in rows])
        return Result({"productRows": [self.item_view(r) for r in saved]})

    def item_list(self, params: dict[str, Any]) -> Result:
        flt = array_param(params, "filter")
        if flt.get("=ownerType") is None or flt.get("=ownerId") is None:
            raise engine_error("REQUIRED_ARG_MISSING", "Required argument is missing: =ownerType, =ownerId")
        try:
            etid = self._owner(flt["=ownerType"])
        except ApiError:
            raise engine_error("ACCESS_DENIED", "Access denied") from None
        owner_id = php_int(flt["=ownerId"])
        if not self.items.exists(etid, owner_id):
            raise engine_error("ACCESS_DENIED", "Access denied")
        rows = [self.item_view(r) for r in self.rows_of(etid, owner_id)]
        start = max(0, php_int(params.get("start")))
        after = start + PAGE_SIZE
        return Result({"productRows": rows[start:after]}, len(rows), after if after < len(rows) else None)

    # -- crm.<deal|lead|quote>.productrows.* ---------------------------------------------------------

    def _old_owner(self, etid: int, params: dict[str, Any]) -> int:
        owner_id = php_int(params.get("id", params.get("ID")))
        if owner_id <= 0:
            raise bad_request("The parameter id is invalid or not defined.")
        if not self.items.exists(etid, owner_id):
            raise bad_request("Not found")
        return owner_id

    def old_set(self, etid: int, params: dict[str, Any]) -> Result:
        owner_id = php_int(params.get("id", params.get("ID")))
        if owner_id <= 0:
            raise bad_request("The parameter id is invalid or not defined.")
        raw: Any = next((params[k] for k in ("rows", "ROWS", "Rows", "arRows") if k in params), [])
        if isinstance(raw, dict):
            raw = list(raw.values())
        if not isinstance(raw, list):
            raise bad_request("The parameter rows must be array.")
        owner_id = self._old_owner(etid, params)
        rows = []
        for item in raw:
            if not isinstance(item, dict):
                continue  # skipped, as the proxy does
            given = {
                to_camel(str(k).upper()): v
                for k, v in item.items()
                if str(k).upper() not in ("OWNER_TYPE", "OWNER_ID")
            }
            _old_check(given)
            rows.append(given)
        self._replace(etid, owner_id, [self._normalise(etid, owner_id, r) for r in rows])
        return Result(True)

    def old_get(self, etid: int, params: dict[str, Any]) -> Result:
        owner_id = self._old_owner(etid, params)
        return Result([_old_view(r) for r in self.rows_of(etid, owner_id)])

    def all_rows(self) -> list[dict[str, Any]]:
        return [self.item_view(r) | {"entityTypeId": r["_etid"]} for r in self.table.rows.values()]


__all__ = ["ProductRows"]
