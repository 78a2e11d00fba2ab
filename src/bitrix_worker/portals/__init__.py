"""Portals as first-class things: the registry (one row per portal, secrets encrypted at rest), the secret box
that encrypts them, and the OAuth token manager that keeps one refresh per expiry across every process.

The single-webhook set-up (``BITRIX_WEBHOOK_URL``) needs none of this: it is the default portal. The registry
is for deployments that serve many portals or use an OAuth application (docs/portals.md).
"""
