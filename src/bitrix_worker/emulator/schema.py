"""Field lists of the old-API CRM entities: a small but realistic subset of ``crm.<entity>.fields``.

Only these names (plus any ``UF_*``) are stored; others are ignored, as the portal ignores typos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CURRENCIES = frozenset({"RUB", "USD", "EUR", "KZT", "BYN", "UAH"})
NUMERIC_TYPES = frozenset({"integer", "double", "user", "crm_company", "crm_contact", "crm_lead", "crm_deal"})


@dataclass(frozen=True, slots=True)
class Field:
    type: str
    title: str
    read_only: bool = False
    multiple: bool = False
    immutable: bool = False  # set on add, silently dropped by the old API's update (CATEGORY_ID)

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "isRequired": False,
            "isReadOnly": self.read_only,
            "isImmutable": self.immutable,
            "isMultiple": self.multiple,
            "isDynamic": False,
            "title": self.title,
        }


class EntityFields(dict[str, Field]):
    """Field map of one entity plus the values a new row starts with."""

    def __init__(self, fields: dict[str, Field], defaults: dict[str, Any]) -> None:
        super().__init__(fields)
        self.defaults = {name: None for name, spec in fields.items() if not spec.multiple} | defaults


_COMMON = {
    "ID": Field("integer", "ID", read_only=True),
    "ASSIGNED_BY_ID": Field("user", "Responsible person"),
    "CREATED_BY_ID": Field("user", "Created by", read_only=True),
    "MODIFY_BY_ID": Field("user", "Modified by", read_only=True),
    "DATE_CREATE": Field("datetime", "Created on", read_only=True),
    "DATE_MODIFY": Field("datetime", "Modified on", read_only=True),
    "OPENED": Field("char", "Available to everyone"),
    "COMMENTS": Field("string", "Comment"),
    "SOURCE_ID": Field("crm_status", "Source"),
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
            "TYPE_ID": Field("crm_status", "Type"),
            "CATEGORY_ID": Field("crm_category", "Pipeline", immutable=True),
            "STAGE_ID": Field("crm_status", "Deal stage"),
            "PROBABILITY": Field("integer", "Probability"),
            "CURRENCY_ID": Field("crm_currency", "Currency"),
            "OPPORTUNITY": Field("double", "Amount"),
            "IS_MANUAL_OPPORTUNITY": Field("char", "Manual amount"),
            "TAX_VALUE": Field("double", "Tax rate"),
            "COMPANY_ID": Field("crm_company", "Company"),
            "CONTACT_ID": Field("crm_contact", "Contact"),
            "CONTACT_IDS": Field("crm_contact", "Contacts", multiple=True),
            "LEAD_ID": Field("crm_lead", "Lead"),
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
            "HONORIFIC": Field("crm_status", "Salutation"),
            "TYPE_ID": Field("crm_status", "Contact type"),
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
            "COMPANY_TYPE": Field("crm_status", "Company type"),
            "INDUSTRY": Field("crm_status", "Industry"),
            "EMPLOYEES": Field("crm_status", "Employees"),
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
            "STATUS_ID": Field("crm_status", "Status"),
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
            "STATUS_ID": Field("crm_status", "Status"),
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
