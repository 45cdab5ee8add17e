"""Websocket streams (placeholder until the websocket module lands)."""

from __future__ import annotations

from typing import Any


def websocket_resource(api: Any, request: Any, kind: str, token: str | None) -> Any:
    """The resource that upgrades *request* to a websocket stream of *kind*."""
    raise NotImplementedError
