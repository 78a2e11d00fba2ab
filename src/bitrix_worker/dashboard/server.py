"""Serving the dashboard: refuse an exposed bind without authentication, then run uvicorn."""

from __future__ import annotations

import ipaddress
import socket

import uvicorn

from ..config import Settings
from ..errors import ConfigError
from .app import create_app
from .security import Guard


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(settings: Settings, host: str) -> None:
    """ConfigError when ``host`` is reachable from other machines and no authentication is configured."""
    if not is_loopback(host) and not Guard.from_settings(settings).enabled:
        raise ConfigError(
            "BITRIX_WORKER_DASHBOARD_HOST",
            f"{host} is not a loopback address: set BITRIX_WORKER_DASHBOARD_TOKEN or "
            "BITRIX_WORKER_DASHBOARD_USER and BITRIX_WORKER_DASHBOARD_PASSWORD first",
        )


def config(settings: Settings, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,  # keep our logging; uvicorn's access log would be the only thing it adds
        log_level="warning",
        access_log=False,
        lifespan="on",
        http="h11",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=2,
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; OSError (port taken, unknown host) for the caller to report in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Run until interrupted (SIGINT/SIGTERM)."""
    host = host or settings.dashboard_host
    port = settings.dashboard_port if port is None else port
    check_bind(settings, host)
    sock = bind(host, port)
    try:
        uvicorn.Server(config(settings, host, port)).run(sockets=[sock])
    finally:
        sock.close()
