"""The quick per-field checks (``fieldtypes.quick_accept``) never change a verdict: ``validate`` with them
gives exactly the findings (kinds, fields, values, texts) of the full check of every value, for generated
operations against deal, contact and crm.item.* schemas parsed from the emulator's own answers."""

from __future__ import annotations

from typing import Any

from fieldschemas import portal_schema
from hypothesis import given, settings
from hypothesis import strategies as st
from test_item_fields import SMART

from bitrix_worker.emulator import EmulatorConfig
from bitrix_worker.schema import EntitySchema
from bitrix_worker.validation import validate

DEAL = portal_schema("deal")
PLAIN_DEAL = portal_schema("deal", EmulatorConfig())  # the schema bench.cost's emulator serves
CONTACT = portal_schema("contact")
SCHEMAS = [DEAL, PLAIN_DEAL, CONTACT, SMART]


def _listed(schema: EntitySchema) -> list[str]:
    """Every id and label the schema lists: the values the set-based quick checks decide on."""
    found = {s for statuses in schema.statuses.values() for pair in statuses.items() for s in pair}
    found |= {s for spec in schema.fields.values() for pair in spec.items for s in pair}
    found |= set(schema.currencies) | {str(c) for c in schema.categories}
    return sorted(found)


_EDGES = ["", "0", "1", "Y", "N", "y", "true", "-5", "007", "5\n", "1.5", " 7", "EUR", "100|EUR", "C_2",
          "2026-12-24", "WON", "C1:WON", "NEW"]  # fmt: skip
_SCALAR = st.one_of(
    st.sampled_from(_EDGES),
    st.text(max_size=8),
    st.integers(min_value=-3, max_value=3),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
)
_VALUE = st.one_of(
    _SCALAR,
    st.lists(_SCALAR, max_size=3),
    st.dictionaries(st.sampled_from(["VALUE", "VALUE_TYPE", "ID", "$ref"]), _SCALAR, max_size=2),
)


@st.composite
def operations(draw: st.DrawFn) -> tuple[EntitySchema, str, dict[str, Any], int | None]:
    schema = draw(st.sampled_from(SCHEMAS))
    required = sorted(n for n, spec in schema.fields.items() if spec.required) or ["TITLE"]
    names = st.one_of(
        st.sampled_from(sorted(schema.fields)),
        st.sampled_from(required),  # where an empty value is a finding
        st.sampled_from(["TITEL", "UF_CRM_NOPE"]),
    )
    value = st.one_of(st.sampled_from(_EDGES), _VALUE, st.sampled_from(_listed(schema)))
    fields = draw(st.dictionaries(names, value, max_size=8))
    op = draw(st.sampled_from(["create", "update", "upsert"]))
    category = draw(st.sampled_from([None, None, 0, 1, 9, 77]))
    return schema, op, fields, category


@settings(max_examples=1000)
@given(operations())
def test_quick_checks_give_the_full_checks_verdicts(case: tuple[Any, ...]) -> None:
    schema, op, fields, category = case
    quick = validate(op, fields, schema, category_id=category)
    full = validate(op, fields, schema, category_id=category, quick=False)
    assert quick == full


def test_the_quick_checks_cover_a_plain_updates_fields() -> None:
    """The fields the cost benchmark's updates set are decided quickly (else the quick path saves nothing),
    and a value the quick check does not accept still gets the full check's finding."""
    validate("update", {"STAGE_ID": "WON"}, PLAIN_DEAL)
    accepts = PLAIN_DEAL.compiled[("accepts", True, None)]
    assert accepts["STAGE_ID"]("WON")
    assert accepts["COMMENTS"]("v1")
    assert not accepts["STAGE_ID"]("Won")
    assert "CATEGORY_ID" not in accepts  # immutable on update
    [finding] = validate("update", {"STAGE_ID": "Won"}, PLAIN_DEAL)
    assert (finding.kind.value, finding.field) == ("not_in_list", "STAGE_ID")


def test_a_huge_integer_is_a_finite_number() -> None:
    """It once went through float and raised OverflowError (``validate`` must never raise)."""
    assert validate("update", {"OPPORTUNITY": 10**400}, PLAIN_DEAL, quick=False) == []
    assert validate("update", {"OPPORTUNITY": 10**400}, PLAIN_DEAL) == []
