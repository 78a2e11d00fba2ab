"""Field names of findings in the producer's own spelling: pure, no I/O.

Entities written with ``crm.item.*`` are validated as they are sent, with camelCase names (a producer may
write ``UF_CRM_5_PAYMENT_METHOD`` or ``ufCrm5PaymentMethod``; ``crm.to_item_fields`` converts), because
that is what the portal checks them against: ``crm.item.fields``. A finding is then renamed to the name
the producer wrote, so it can find the field in its own payload, and its message says what was sent.
The old API sends names unchanged: nothing to rename.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from .crm import Api, EntitySpec, to_camel
from .validation import Finding


def sent_name(spec: EntitySpec, name: str) -> str:
    """The name a producer's field is sent under."""
    return name if spec.api is Api.OLD else to_camel(name, spec.entity_type_id)


def respell(findings: Sequence[Finding], spec: EntitySpec, names: Iterable[str]) -> list[Finding]:
    """``findings`` (on sent names) renamed to the producer's ``names`` where one was sent as it."""
    if spec.api is Api.OLD:
        return list(findings)
    wrote = {sent_name(spec, n): n for n in names}  # the last spelling of a name wins, as its value does
    out: list[Finding] = []
    for f in findings:
        own = wrote.get(f.field, f.field)
        renamed = replace(f, field=own, message=f"{own} (sent as {f.field}): {f.message}")
        out.append(f if own == f.field else renamed)
    return out
