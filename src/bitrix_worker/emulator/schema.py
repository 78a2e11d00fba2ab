"""Field lists of the old-API CRM entities: a small but realistic subset of ``crm.<entity>.fields``.

These are the start-up defaults; ``catalog.PortalSchema`` copies them per portal and adds the user fields,
required flags and pipelines of the emulator's configuration (or added at run time via ``/_emulator/``).
Only the names in a portal's schema are stored; others are ignored, as the portal ignores typos.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

CURRENCIES = ("RUB", "USD", "EUR", "KZT", "BYN", "UAH")
NUMERIC_TYPES = frozenset(
    {"integer", "double", "user", "crm_company", "crm_contact", "crm_lead", "crm_deal", "crm_category"}
)
DATE_TYPES = frozenset({"date", "datetime"})


@dataclass(frozen=True, slots=True)
class Field:
    """One field descriptor, answered in the exact shape of ``crm.<entity>.fields``."""

    type: str
    title: str
    read_only: bool = False
    multiple: bool = False
    required: bool = False
    immutable: bool = False
    deprecated: bool = False
    status_type: str | None = None
    items: tuple[tuple[str, str], ...] = ()  # enumeration: (ID, VALUE)
    label: str | None = None  # user fields: the human label (their ``title`` is the field code)
    settings: dict[str, Any] = field(default_factory=dict)

    def describe(self, name: str = "") -> dict[str, Any]:
        user = name.startswith("UF_")
        out: dict[str, Any] = {
            "type": self.type,
            "isRequired": self.required,
            "isReadOnly": self.read_only,
            "isImmutable": self.immutable,
            "isMultiple": self.multiple,
            "isDynamic": user,
            "title": name if user else self.title,
        }
        if self.deprecated:
            out["isDeprecated"] = True
        if self.type == "enumeration":
            out["items"] = [{"ID": i, "VALUE": v} for i, v in self.items]
        if self.status_type is not None:
            out["statusType"] = self.status_type
        if self.settings:
            out["settings"] = dict(self.settings)
        if user:
            label = self.label or self.title
            out.update(listLabel=label, formLabel=label, filterLabel=label)
        return out

    def with_required(self) -> Field:
        return replace(self, required=True)


class EntityFields(dict[str, Field]):
    """Field map of one entity plus the values a new row starts with."""

    def __init__(self, fields: dict[str, Field], defaults: dict[str, Any]) -> None:
        super().__init__(fields)
        self.defaults = {name: None for name, spec in fields.items() if not spec.multiple} | defaults

    def copy_with(self, extra: dict[str, Field]) -> EntityFields:
        return EntityFields(dict(self) | extra, dict(self.defaults))


def _status(title: str, status_type: str) -> Field:
    return Field("crm_status", title, status_type=status_type)


_COMMON = {
    "ID": Field("integer", "ID", read_only=True),
    "ASSIGNED_BY_ID": Field("user", "Responsible person"),
    "CREATED_BY_ID": Field("user", "Created by", read_only=True),
    "MODIFY_BY_ID": Field("user", "Modified by", read_only=True),
    "DATE_CREATE": Field("datetime", "Created on", read_only=True),
    "DATE_MODIFY": Field("datetime", "Modified on", read_only=True),
    "OPENED": Field("char", "Available to everyone"),
    "COMMENTS": Field("string", "Comment"),
    "SOURCE_ID": _status("Source", "SOURCE"),
    "SOURCE_DESCRIPTION": Field("string", "Source information"),
    "ORIGINATOR_ID": Field("string", "External Source"),
    "ORIGIN_ID": Field("string", "Identifier in External Source"),
}
_MULTI = {
    "PHONE": Field("crm_multifield", "Phone", multiple=True),
    "EMAIL": Field("crm_multifield", "E-mail", multiple=True),
}
_PERSON = {
    "NAME": Field("string", "Name"),
    "LAST_NAME": Field("string", "Last name"),
    "SECOND_NAME": Field("string", "Second name"),
    "POST": Field("string", "Position"),
}

FIELDS: dict[str, EntityFields] = {
    "deal": EntityFields(
        _COMMON
        | {
            "TITLE": Field("string", "Name"),
            "TYPE_ID": _status("Type", "DEAL_TYPE"),
            "CATEGORY_ID": Field("crm_category", "Pipeline", immutable=True),
            "STAGE_ID": _status("Deal stage", "DEAL_STAGE"),
            "PROBABILITY": Field("integer", "Probability"),
            "CURRENCY_ID": Field("crm_currency", "Currency"),
            "OPPORTUNITY": Field("double", "Amount"),
            "IS_MANUAL_OPPORTUNITY": Field("char", "Manual amount"),
            "TAX_VALUE": Field("double", "Tax rate"),
            "COMPANY_ID": Field("crm_company", "Company"),
            "CONTACT_ID": Field("crm_contact", "Contact", deprecated=True),
            "CONTACT_IDS": Field("crm_contact", "Contacts", multiple=True),
            "LEAD_ID": Field("crm_lead", "Lead", read_only=True),
            "BEGINDATE": Field("date", "Start date"),
            "CLOSEDATE": Field("date", "End date"),
            "CLOSED": Field("char", "Closed"),
            "ADDITIONAL_INFO": Field("string", "Additional information"),
        },
        {
            "STAGE_ID": "NEW",
            "CATEGORY_ID": "0",
            "CURRENCY_ID": "RUB",
            "OPPORTUNITY": "0.00",
            "IS_MANUAL_OPPORTUNITY": "N",
            "OPENED": "Y",
            "CLOSED": "N",
        },
    ),
    "contact": EntityFields(
        _COMMON
        | _PERSON
        | _MULTI
        | {
            "HONORIFIC": _status("Salutation", "HONORIFIC"),
            "TYPE_ID": _status("Contact type", "CONTACT_TYPE"),
            "COMPANY_ID": Field("crm_company", "Company"),
            "BIRTHDATE": Field("date", "Date of birth"),
            "ADDRESS": Field("string", "Address"),
            "EXPORT": Field("char", "Included in export"),
            "ORIGIN_VERSION": Field("string", "Original version"),
        },
        {"OPENED": "Y", "EXPORT": "Y", "TYPE_ID": "CLIENT"},
    ),
    "company": EntityFields(
        _COMMON
        | _MULTI
        | {
            "TITLE": Field("string", "Company name"),
            "COMPANY_TYPE": _status("Company type", "COMPANY_TYPE"),
            "INDUSTRY": _status("Industry", "INDUSTRY"),
            "EMPLOYEES": _status("Employees", "EMPLOYEES"),
            "REVENUE": Field("double", "Annual revenue"),
            "CURRENCY_ID": Field("crm_currency", "Currency"),
            "ADDRESS": Field("string", "Address"),
            "BANKING_DETAILS": Field("string", "Payment details"),
            "ORIGIN_VERSION": Field("string", "Original version"),
        },
        {"OPENED": "Y", "COMPANY_TYPE": "CUSTOMER", "CURRENCY_ID": "RUB"},
    ),
    "lead": EntityFields(
        _COMMON
        | _PERSON
        | _MULTI
        | {
            "TITLE": Field("string", "Lead name"),
            "STATUS_ID": _status("Status", "STATUS"),
            "CURRENCY_ID": Field("crm_currency", "Currency"),
            "OPPORTUNITY": Field("double", "Amount"),
            "COMPANY_TITLE": Field("string", "Company name"),
            "COMPANY_ID": Field("crm_company", "Company"),
            "CONTACT_ID": Field("crm_contact", "Contact"),
        },
        {"STATUS_ID": "NEW", "CURRENCY_ID": "RUB", "OPPORTUNITY": "0.00", "OPENED": "Y"},
    ),
    "quote": EntityFields(  # crm.quote.fields documents no source or external-id fields
        {k: v for k, v in _COMMON.items() if not k.startswith(("ORIGIN", "SOURCE_"))}
        | {
            "TITLE": Field("string", "Title"),
            "STATUS_ID": _status("Status", "QUOTE_STATUS"),
            "CURRENCY_ID": Field("crm_currency", "Currency"),
            "OPPORTUNITY": Field("double", "Amount"),
            "TAX_VALUE": Field("double", "Tax amount"),
            "COMPANY_ID": Field("crm_company", "Company"),
            "CONTACT_ID": Field("crm_contact", "Contact"),
            "CONTACT_IDS": Field("crm_contact", "Contacts", multiple=True),
            "DEAL_ID": Field("crm_deal", "Deal"),
            "LEAD_ID": Field("crm_lead", "Lead"),
            "QUOTE_NUMBER": Field("string", "Estimate number", read_only=True),
            "BEGINDATE": Field("date", "Date of issue"),
            "CLOSEDATE": Field("date", "Date of completion"),
            "CLOSED": Field("char", "Completed"),
            "CONTENT": Field("string", "Content"),
            "TERMS": Field("string", "Terms"),
        },
        {"STATUS_ID": "DRAFT", "CURRENCY_ID": "RUB", "OPPORTUNITY": "0.00", "OPENED": "Y", "CLOSED": "N"},
    ),
}

DEAL_STAGES = (
    ("NEW", "New", "process"),
    ("PREPARATION", "Preparing documents", "process"),
    ("PREPAYMENT_INVOICE", "Invoice", "process"),
    ("EXECUTING", "In progress", "process"),
    ("FINAL_INVOICE", "Final invoice", "process"),
    ("WON", "Deal won", "success"),
    ("LOSE", "Deal lost", "failure"),
    ("APOLOGY", "Analyze failure", "apology"),
)

#: Status lists (``crm.status.entity.items``) other than the per-pipeline deal stages.
STATUS_LISTS: dict[str, tuple[tuple[str, str], ...]] = {
    "SOURCE": (
        ("CALL", "Call"),
        ("EMAIL", "E-Mail"),
        ("WEB", "Website"),
        ("ADVERTISING", "Advertising"),
        ("PARTNER", "Existing client"),
        ("RECOMMENDATION", "By recommendation"),
        ("TRADE_SHOW", "Show/Exhibition"),
        ("WEBFORM", "CRM form"),
        ("CALLBACK", "Callback"),
        ("STORE", "Online store"),
        ("OTHER", "Other"),
    ),
    "DEAL_TYPE": (
        ("SALE", "Sales"),
        ("COMPLEX", "Integrated sale"),
        ("GOODS", "Merchandise sale"),
        ("SERVICES", "Service sale"),
        ("SERVICE", "After-sales service"),
    ),
    "STATUS": (
        ("NEW", "Unassigned"),
        ("IN_PROCESS", "In progress"),
        ("PROCESSED", "Processed"),
        ("JUNK", "Junk lead"),
        ("CONVERTED", "Good lead"),
    ),
    "CONTACT_TYPE": (
        ("CLIENT", "Clients"),
        ("SUPPLIER", "Suppliers"),
        ("PARTNER", "Partners"),
        ("OTHER", "Other"),
    ),
    "COMPANY_TYPE": (
        ("CUSTOMER", "Client"),
        ("SUPPLIER", "Supplier"),
        ("COMPETITOR", "Competitor"),
        ("PARTNER", "Partner"),
        ("OTHER", "Other"),
    ),
    "INDUSTRY": (
        ("IT", "Information Technology"),
        ("TELECOM", "Telecommunication"),
        ("MANUFACTURING", "Manufacturing"),
        ("BANKING", "Banking Services"),
        ("OTHER", "Other"),
    ),
    "EMPLOYEES": (
        ("EMPLOYEES_1", "less than 50"),
        ("EMPLOYEES_2", "50-250"),
        ("EMPLOYEES_3", "250-500"),
        ("EMPLOYEES_4", "over 500"),
    ),
    "QUOTE_STATUS": (
        ("DRAFT", "New"),
        ("SENT", "Sent to client"),
        ("RECEIVED", "Received"),
        ("APPROVED", "Approved"),
        ("DECLAINED", "Declined"),
    ),
    "HONORIFIC": (("HNR_EN_1", "Mr."), ("HNR_EN_2", "Mrs."), ("HNR_EN_3", "Ms."), ("HNR_EN_4", "Dr.")),
}
