"""From what an operator (or an install callback) gives to a ``PortalRecord``: pure checks, one clear line.

Either a webhook URL, or an OAuth application (client id and secret) with its current token pair; never
both. The webhook URL is checked like ``BITRIX_WEBHOOK_URL``; error messages show no secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..redaction import WebhookUrl
from .model import DEFAULT_TOKEN_URL, PLANS, OAuthTokens, PlanLimits, PortalRecord, check_portal_id

__all__ = ["PortalForm", "build_record"]


@dataclass(frozen=True, slots=True)
class PortalForm:
    portal_id: str
    webhook: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    endpoint: str | None = None
    token_url: str | None = None
    plan: str = "standard"
    burst: int | None = None
    rate_per_s: float | None = None
    member_id: str | None = None
    application_token: str | None = None
    expires_at: int | None = None


def _plan(form: PortalForm) -> PlanLimits:
    base = PLANS.get(form.plan)
    if base is None and (form.burst is None or form.rate_per_s is None):
        raise ValueError(f"plan {form.plan!r}: use standard or enterprise, or give --burst and --rate")
    burst = form.burst if form.burst is not None else base.burst if base else 0
    rate = form.rate_per_s if form.rate_per_s is not None else base.rate_per_s if base else 0.0
    if burst < 1 or not rate > 0:
        raise ValueError("burst must be >= 1 and rate > 0")
    if base is not None and (burst, rate) == (base.burst, base.rate_per_s):
        return base
    return PlanLimits(form.plan if base is None else f"{form.plan}-custom", burst, rate)


def build_record(form: PortalForm) -> PortalRecord:
    """The record, or ``ValueError`` with one line saying what is missing or wrong."""
    pid = check_portal_id(form.portal_id)
    plan = _plan(form)
    oauth_given = [form.client_id, form.client_secret, form.access_token, form.refresh_token]
    if form.webhook:
        if any(oauth_given):
            raise ValueError("give either --webhook or the OAuth options, not both")
        webhook = WebhookUrl.parse(form.webhook)  # ValueError shows the URL redacted
        return PortalRecord(
            pid, "webhook", f"{webhook.reveal().split('/rest/')[0]}/rest/", plan, webhook_url=webhook.reveal()
        )
    missing = [
        name
        for name, value in zip(
            ("--client-id", "--client-secret", "--access-token", "--refresh-token"), oauth_given, strict=True
        )
        if not value
    ]
    if missing:
        raise ValueError(f"give --webhook, or an OAuth app: missing {', '.join(missing)}")
    endpoint = form.endpoint or f"https://{pid}/rest/"
    if not endpoint.startswith(("https://", "http://")):
        raise ValueError("--endpoint must be an http(s) URL such as https://portal.bitrix24.com/rest/")
    return PortalRecord(
        pid,
        "oauth",
        endpoint if endpoint.endswith("/") else endpoint + "/",
        plan,
        client_id=form.client_id,
        client_secret=form.client_secret,
        tokens=OAuthTokens(str(form.access_token), str(form.refresh_token), form.expires_at),
        token_url=form.token_url or DEFAULT_TOKEN_URL,
        member_id=form.member_id,
        application_token=form.application_token,
    )
