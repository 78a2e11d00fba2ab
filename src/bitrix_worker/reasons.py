"""Why an operation ended (or waits) as it did: one closed vocabulary for results, counters and metrics.

A member's value is the stable code (a Prometheus label, never reworded); ``sentence`` is the text the
outcomes stream, the counters hash and the dead-letter entry have always carried. A reason whose sentence
needs numbers (``server_error: retry budget of 5 spent``) gets them from the result's ``detail``; its code
stays the same, so rewording a sentence can no longer turn a metric label into ``other``.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # applied
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    ADOPTED = "adopted"  # a create that had already happened was found by ORIGIN_ID and taken over
    MOVED = "moved"  # updated, and moved to another pipeline (a deal's by a separate crm.item.update)
    ROWS_RETRIED = "rows_retried"  # entity written earlier; its rows / pipeline move applied on a retry alone
    ALREADY_DELETED = "already_deleted"  # delete of an entity that is gone: the goal is reached
    NOTHING_TO_DELETE = "nothing_to_delete"  # delete of a key that never had a Bitrix24 id
    # skipped
    STALE = "stale"  # its version is older than the last applied one (or an earlier member's)
    NO_BITRIX_ID = "no_bitrix_id"  # update of a key that was never created
    DELETED_IN_BITRIX24 = "deleted_in_bitrix24"  # the entity was deleted in Bitrix24
    # dead-lettered
    BUDGET_SPENT = "budget_spent"  # failures of its own used up its class's retry budget
    REFUSAL_CAP = "refusal_cap"  # refused by the portal's limits more often than the cap allows
    POISON = "poison"  # the entry itself cannot be processed
    CREATE_FAILED = "create_failed"  # its key's create is in the dead-letter stream: it waits with it
    UNRECONCILABLE = "unreconcilable"  # an ambiguous create of an entity whose key cannot be looked up
    REF_UNRESOLVED = "ref_unresolved"  # a {"$ref": ...} names a key with no live Bitrix24 id
    INVALID_DATA = "invalid_data"  # its fields fail the portal's schema (screening): refused before any call
    # waiting (not final)
    RETRYING = "retrying"  # a failure within its budget: another attempt after a backoff
    RECREATING = "recreating"  # deleted in Bitrix24 and to be created again (upsert, or the setting)
    RATE_LIMITED = "rate_limited"  # refused by the portal's request limit: wait and retry
    METHOD_RESET_WAIT = "method_reset_wait"  # the method's operating-time budget is spent until its reset
    METHOD_PAUSED = "method_paused"  # the method was paused before sending (operating time)
    BLOCKED = "blocked"  # OVERLOAD_LIMIT: the portal is paused
    LEASE_BUSY = "lease_busy"  # another worker holds the key's create lease
    LEASE_LOST = "lease_lost"  # this worker's create lease lapsed before sending
    PORTAL_DOWN = "portal_down"  # the portal as a whole is failing: held, no budget spent
    SCHEMA_UNAVAILABLE = "schema_unavailable"  # its entity's field schema cannot be fetched yet: held

    @property
    def sentence(self) -> str:
        return _SENTENCES.get(self, self.value)


_SENTENCES: dict[Reason, str] = {
    Reason.ADOPTED: "adopted existing entity",
    Reason.MOVED: "updated and moved to another pipeline",
    Reason.ROWS_RETRIED: "the entity was written before; its product rows were set on a retry, alone",
    Reason.UNRECONCILABLE: (
        "its create may have run and Bitrix24 cannot be searched for its key: check before replaying"
    ),
    Reason.REF_UNRESOLVED: "a reference by external key has no Bitrix24 id: replay its key's create first",
    Reason.ALREADY_DELETED: "already deleted in Bitrix24",
    Reason.NOTHING_TO_DELETE: "no Bitrix24 id: nothing to delete",
    Reason.BUDGET_SPENT: "retry budget spent",
    Reason.INVALID_DATA: "invalid data: refused before sending",
    Reason.CREATE_FAILED: "its key's create was dead-lettered: replay the create first",
    Reason.REFUSAL_CAP: "refused too often",
    Reason.RETRYING: "retrying after a failure",
    Reason.RECREATING: "deleted in Bitrix24; re-creating",
    Reason.RATE_LIMITED: "rate limited: retrying after backoff",
    Reason.METHOD_RESET_WAIT: "method time budget spent: waiting for its reset",
    Reason.METHOD_PAUSED: "method paused (operating time)",
    Reason.BLOCKED: "blocked by Bitrix24 (OVERLOAD_LIMIT): portal paused",
    Reason.LEASE_BUSY: "lease held by another worker",
    Reason.LEASE_LOST: "lease lost before sending",
    Reason.PORTAL_DOWN: "the portal is failing: held until it recovers",
    Reason.SCHEMA_UNAVAILABLE: "field schema unavailable: held until it can be fetched",
}
