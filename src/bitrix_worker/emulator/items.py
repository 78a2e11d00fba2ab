"""``crm.item.*`` and ``crm.type.*``: the universal API, with camelCase fields and an ``entityTypeId``.

Leads (1), deals (2), contacts (3), companies (4) and quotes (7) live in the same tables as their
``crm.<entity>.*`` methods: a deal written with ``crm.item.add`` is read back by ``crm.deal.get`` with
UPPER_CASE names, and the old API's rules apply to what is stored (its field list, currency check). The
differences that are the point of this API are kept: ``crm.item.update`` moves a deal to another pipeline
(``categoryId``), where ``crm.deal.update`` drops ``CATEGORY_ID``; "empty" values (``0``, ``""``, ``"0"``,
``false``, ``[]``) become null; a boolean is true only for ``true``/``"true"``/``"y"``/``"Y"``.

Smart invoices (31) and smart processes (types from ``crm.type.list``) have their own tables and store
what they are given; their fields, pipelines and stage lists are in ``itemschema``.
Answers: ``{"item": {...}}``, ``{"items": [...]}`` with ``total``/``next``,
``[]`` for delete; errors are HTTP 400 with a code (``NOT_FOUND``, ``100`` for a missing parameter, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..crm import is_smart_process_type, to_camel, to_upper
from .config import SmartProcessType
from .errors import ApiError, engine_error, invalid_parameter, missing_parameter
from .itemschema import ItemType, item_type
from .schema import CURRENCIES, Field
from .store import _FILTER_OPS, ENTITIES, PAGE_SIZE, CrmStore, Result, _predicate, portal_time

SHARED = {1: "lead", 2: "deal", 3: "contact", 4: "company", 7: "quote"}
SMART_INVOICE = 31
OLD_INVOICE = 5
_ID_TYPES = frozenset(
    {"integer", "user", "crm_company", "crm_contact", "crm_lead", "crm_deal", "crm_category"}
)
_BOOLEANS = frozenset({"opened", "isManualOpportunity", "closed", "isRecurring", "export", "isMyCompany"})
_READ_ONLY = frozenset({"id", "createdTime", "updatedTime", "createdBy", "updatedBy", "entityTypeId"})


def int_param(params: dict[str, Any], name: str) -> int:
    """An ``int`` action parameter as the controller binds it: missing or not an integer -> error 100."""
    raw = params.get(name)
    if raw is None:
        raise missing_parameter(name)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    text = str(raw).strip() if isinstance(raw, str | float) else ""
    if text.lstrip("-").isdigit():
        return int(text)
    shown = "Array" if isinstance(raw, list | dict) else str(raw)
    raise invalid_parameter(shown, name, "int")


def array_param(params: dict[str, Any], name: str, *, required: bool = True) -> dict[str, Any]:
    raw = params.get(name)
    if raw is None:
        if required:
            raise missing_parameter(name)
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list):
        return {str(i): v for i, v in enumerate(raw)}
    raise invalid_parameter(str(raw), name, "array")


def _empty(value: Any) -> bool:
    """PHP ``empty()``: what crm.item.* turns into null."""
    return value in (None, 0, 0.0, "", "0", False) or value in ([], {})


def _incoming(name: str, value: Any) -> Any:
    if _empty(value):
        return None
    if name in _BOOLEANS:
        return "Y" if value is True or str(value).lower() in ("true", "y") else "N"
    return value


@dataclass(slots=True)
class ItemTable:
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1


def _typed(spec: Field | None, value: Any) -> Any:
    """An old-API stored value (strings) as crm.item.* returns it (numbers as numbers)."""
    if value is None or spec is None:
        return value
    if spec.multiple and spec.type in _ID_TYPES:
        return [int(v) for v in value]
    if spec.type in _ID_TYPES:
        return int(value) if str(value).lstrip("-").isdigit() else value
    if spec.type == "double":
        return float(value)
    return value


class ItemStore:
    """crm.item.* over the shared tables and the smart-invoice / smart-process tables."""

    def __init__(self, crm: CrmStore, types: list[SmartProcessType]) -> None:
        self.crm = crm
        self.initial_types = list(types)
        self.types: dict[int, SmartProcessType] = {}
        self.tables: dict[int, ItemTable] = {}
        self.schemas: dict[int, ItemType] = {}
        self.reset()

    def reset(self) -> None:
        """Empty tables; the configured types (after the portal schema's reset, whose status lists get
        the stage lists of every pipeline back)."""
        self.types = {t.entity_type_id: t for t in self.initial_types}
        self.tables = {SMART_INVOICE: ItemTable()} | {etid: ItemTable() for etid in self.types}
        self.schemas = {}
        self._add_schema(SMART_INVOICE, item_type(None))
        for etid, smart in self.types.items():
            self._add_schema(etid, item_type(smart))

    def _add_schema(self, etid: int, schema: ItemType) -> None:
        self.schemas[etid] = schema
        self.crm.schema.statuses.update(schema.status_lists())

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Result]]:
        return {
            "crm.item.add": self.add,
            "crm.item.update": self.update,
            "crm.item.get": self.get,
            "crm.item.list": self.list,
            "crm.item.delete": self.delete,
            "crm.item.fields": self.fields,
            "crm.category.list": self.category_list,
            "crm.type.list": self.type_list,
            "crm.type.get": self.type_get,
            "crm.type.add": self.type_add,
        }

    # -- lookups --------------------------------------------------------------------------------------

    def entity_type(self, params: dict[str, Any]) -> int:
        etid = int_param(params, "entityTypeId")
        if etid == OLD_INVOICE:
            raise engine_error(
                "ENTITY_TYPE_NOT_SUPPORTED", "Working with this type of objects is not supported"
            )
        if etid not in SHARED and etid not in self.tables:
            raise engine_error("NOT_FOUND", "Smart process not found")
        return etid

    def exists(self, etid: int, item_id: int) -> bool:
        if etid in SHARED:
            return item_id in self.crm.tables[SHARED[etid]].rows
        table = self.tables.get(etid)
        return table is not None and item_id in table.rows

    def title(self, etid: int) -> str:
        if etid == SMART_INVOICE:
            return "Invoice"
        smart = self.types.get(etid)
        return smart.title if smart is not None else SHARED.get(etid, "Item").capitalize()

    def view(self, etid: int, item_id: int) -> dict[str, Any]:
        """The item as ``crm.item.get`` answers it (camelCase, typed values)."""
        if etid in SHARED:
            entity = SHARED[etid]
            row = self.crm.tables[entity].rows[item_id]
            specs = self.crm.schema.fields[entity]
            item = {
                to_camel(name, etid): _typed(specs.get(name), value)
                for name, value in row.items()
                if specs.get(name) is None or specs[name].type != "crm_multifield"
            }
            if "CONTACT_IDS" in specs and "contactIds" not in item:
                item["contactIds"] = []
        else:
            item = dict(self.tables[etid].rows[item_id])
        item["entityTypeId"] = etid
        return item

    def all(self, etid: int) -> list[dict[str, Any]]:
        ids = (
            self.crm.tables[SHARED[etid]].rows if etid in SHARED else self.tables.get(etid, ItemTable()).rows
        )
        return [self.view(etid, i) for i in list(ids)]

    def _item_id(self, etid: int, params: dict[str, Any]) -> int:
        item_id = int_param(params, "id")
        if not self.exists(etid, item_id):
            raise engine_error("NOT_FOUND", "Element not found")
        return item_id

    # -- writes ---------------------------------------------------------------------------------------

    def _shared_fields(self, etid: int, fields: dict[str, Any]) -> dict[str, Any]:
        return {
            to_upper(name, etid): _incoming(name, value) for name, value in fields.items() if name != "fm"
        }

    def _shared(self, etid: int, call: Callable[[], Result]) -> Result:
        """Run an old-API store call, answering its errors the way crm.item.* words them."""
        try:
            return call()
        except ApiError as exc:
            prefix = 'Invalid value for the "'
            if exc.description.startswith(prefix):
                title = exc.description[len(prefix) :].split('"')[0]
                raise engine_error(
                    "CRM_FIELD_ERROR_VALUE_NOT_VALID", f'Invalid value for field "{title}"'
                ) from None
            if exc.description.startswith("Not found"):
                raise engine_error("NOT_FOUND", "Element not found") from None
            raise

    def _own_fields(self, etid: int, fields: dict[str, Any]) -> dict[str, Any]:
        # the controller reads either spelling: TITLE and title both set the title
        named = {to_camel(to_upper(name, etid), etid): value for name, value in fields.items()}
        out = {name: _incoming(name, value) for name, value in named.items() if name not in _READ_ONLY}
        currency = out.get("currencyId")
        if currency is not None and str(currency) not in CURRENCIES:
            raise engine_error("CRM_FIELD_ERROR_VALUE_NOT_VALID", 'Invalid value for field "Currency"')
        return out

    def _defaults(self, etid: int, item_id: int) -> dict[str, Any]:
        schema = self.schemas[etid]
        category = schema.default_category
        stage = schema.stages(category)[0][0]
        stamp = portal_time()
        user = int(self.crm.user_id)
        return {
            "id": item_id,
            "xmlId": None,
            "title": f"{self.title(etid)} #{item_id}",
            "createdBy": user,
            "updatedBy": user,
            "createdTime": stamp,
            "updatedTime": stamp,
            "assignedById": user,
            "opened": "Y",
            "categoryId": category,
            "stageId": stage,
            "currencyId": "RUB",
            "opportunity": 0.0,
            "isManualOpportunity": "N",
            "companyId": None,
            "contactId": None,
            "contactIds": [],
        }

    def add(self, params: dict[str, Any]) -> Result:
        etid = self.entity_type(params)
        fields = array_param(params, "fields")
        if etid in SHARED:
            upper = self._shared_fields(etid, fields)
            result = self._shared(etid, lambda: self.crm.add(SHARED[etid], {"fields": upper}))
            return Result({"item": self.view(etid, int(result.value))})
        values = self._own_fields(etid, fields)
        table = self.tables[etid]
        item_id = table.next_id
        table.next_id += 1
        row = self._defaults(etid, item_id)
        row.update(values)
        table.rows[item_id] = row
        return Result({"item": self.view(etid, item_id)})

    def update(self, params: dict[str, Any]) -> Result:
        etid = self.entity_type(params)
        item_id = self._item_id(etid, params)
        fields = array_param(params, "fields")
        if etid in SHARED:
            upper = self._shared_fields(etid, fields)
            call = {"id": item_id, "fields": upper}
            self._shared(etid, lambda: self.crm.update(SHARED[etid], call, move=True))
            return Result({"item": self.view(etid, item_id)})
        row = self.tables[etid].rows[item_id]
        values = self._own_fields(etid, fields)
        if (
            "categoryId" in values
            and values["categoryId"] != row.get("categoryId")
            and "stageId" not in values
        ):
            stage = str(row.get("stageId") or "NEW").rpartition(":")[2]
            values["stageId"] = f"DT{etid}_{values['categoryId'] or 0}:{stage}"
        row.update(values)
        row["updatedTime"] = portal_time()
        row["updatedBy"] = int(self.crm.user_id)
        return Result({"item": self.view(etid, item_id)})

    def get(self, params: dict[str, Any]) -> Result:
        etid = self.entity_type(params)
        return Result({"item": self.view(etid, self._item_id(etid, params))})

    def delete(self, params: dict[str, Any]) -> Result:
        etid = self.entity_type(params)
        item_id = self._item_id(etid, params)
        self.remove(etid, item_id)
        return Result([])

    def remove(self, etid: int, item_id: int) -> bool:
        if etid in SHARED:
            return self.crm.remove(SHARED[etid], item_id)
        table = self.tables.get(etid)
        if table is None or table.rows.pop(item_id, None) is None:
            return False
        if self.crm.on_remove is not None:
            self.crm.on_remove(f"item:{etid}", item_id)
        return True

    # -- reads ----------------------------------------------------------------------------------------

    def list(self, params: dict[str, Any]) -> Result:
        etid = self.entity_type(params)
        flt = array_param(params, "filter", required=False)
        order = array_param(params, "order", required=False)
        items = self.all(etid)
        tests = []
        for raw_key, want in flt.items():
            key = str(raw_key)
            op = next((o for o in _FILTER_OPS if key.startswith(o)), "=")
            name = to_camel(to_upper(key[len(op) :] if key.startswith(op) else key, etid), etid)
            numeric = isinstance(want, int | float) and not isinstance(want, bool)
            tests.append(_predicate(op, name, want, numeric))
        matched = [item for item in items if all(t(item) for t in tests)]
        for name, direction in reversed(list(order.items())):
            camel = to_camel(to_upper(str(name), etid), etid)
            matched.sort(
                key=lambda i: (i.get(camel) is not None, str(i.get(camel))),
                reverse=str(direction).upper() == "DESC",
            )
        start = max(0, int_param(params, "start") if params.get("start") is not None else 0)
        page = matched[start : start + PAGE_SIZE]
        after = start + PAGE_SIZE
        return Result({"items": page}, len(matched), after if after < len(matched) else None)

    def fields(self, params: dict[str, Any]) -> Result:
        etid = self.entity_type(params)
        if etid in SHARED:
            specs = self.crm.schema.fields[SHARED[etid]]
            described = {
                to_camel(name, etid): spec.describe(name) | {"upperName": name}
                for name, spec in specs.items()
                if spec.type != "crm_multifield"
            }
        else:
            described = self.schemas[etid].describe()
        return Result({"fields": described})

    def category_list(self, params: dict[str, Any]) -> Result:
        """Pipelines of smart invoices and smart processes; the others' are the portal schema's."""
        raw = params.get("entityTypeId", params.get("ENTITY_TYPE_ID"))
        etid = int(raw) if isinstance(raw, int | str) and str(raw).strip().isdigit() else 0
        if etid in self.schemas:
            return Result(self.schemas[etid].category_list())
        return Result(self.crm.schema.category_list(params))

    # -- smart-process types --------------------------------------------------------------------------

    def _type_view(self, smart: SmartProcessType) -> dict[str, Any]:
        yn = {True: "Y", False: "N"}
        return {
            "id": smart.id,
            "title": smart.title,
            "code": smart.code,
            "entityTypeId": smart.entity_type_id,
            "isCategoriesEnabled": yn[smart.categories],
            "isStagesEnabled": "Y",
            "isClientEnabled": "Y",
            "isLinkWithProductsEnabled": yn[smart.products],
        }

    def type_list(self, params: dict[str, Any]) -> Result:
        flt = array_param(params, "filter", required=False)
        want = flt.get("entityTypeId", flt.get("=entityTypeId"))
        types = [
            self._type_view(t)
            for t in self.types.values()
            if want is None or str(t.entity_type_id) == str(want)
        ]
        return Result({"types": types}, len(types))

    def type_get(self, params: dict[str, Any]) -> Result:
        type_id = int_param(params, "id")
        smart = next((t for t in self.types.values() if t.id == type_id), None)
        if smart is None:
            raise engine_error("NOT_FOUND", "Smart process not found")
        return Result({"type": self._type_view(smart)})

    def type_add(self, params: dict[str, Any]) -> Result:
        fields = array_param(params, "fields")
        title = str(fields.get("title") or "").strip()
        if not title:
            raise engine_error("CRM_FIELD_ERROR_REQUIRED", 'The "Title" field is required')
        raw = fields.get("entityTypeId")
        etid = int(raw) if raw is not None and str(raw).isdigit() else max([1028, *self.types]) + 2
        if not is_smart_process_type(etid) or etid in self.types:
            raise engine_error("INVALID_ARG_VALUE", "entityTypeId is out of allowed range")
        smart = SmartProcessType(
            id=max([0, *(t.id for t in self.types.values())]) + 1,
            entity_type_id=etid,
            title=title,
            products=str(fields.get("isLinkWithProductsEnabled", "Y")).upper() == "Y",
        )
        self.types[etid] = smart
        self.tables[etid] = ItemTable()
        self._add_schema(etid, item_type(smart))
        return Result({"type": self._type_view(smart)})


__all__ = ["ENTITIES", "SHARED", "SMART_INVOICE", "ItemStore", "array_param", "int_param"]
