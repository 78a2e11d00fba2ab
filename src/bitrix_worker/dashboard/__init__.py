"""A web dashboard for operators: the flow at a glance, one key's story, dead letters to fix and replay.

``bitrix-worker dashboard`` serves it (see docs/dashboard.md); ``create_app`` builds the Starlette app.
"""

from .app import create_app
from .server import check_bind, serve

__all__ = ["check_bind", "create_app", "serve"]
