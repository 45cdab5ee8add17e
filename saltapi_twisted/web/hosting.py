"""Web app hosting, as rest_cherrypy does (``static``/``static_path``, ``app``/``app_path``).

A browser UI such as SaltGUI can be served from the API's own origin, so it
needs no CORS and its cookie stays same-site. Files come from the
configured directory only (``twisted.web.static.File`` refuses paths that
leave it); directory listings are off.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.web.resource import Resource
from twisted.web.static import File


class _NoListingFile(File):
    """Static files without directory listings."""

    def directoryListing(self) -> Resource:  # noqa: N802 - Twisted hook
        return self.forbidden


class Mounts(Resource):
    """Routes the first path segment to a mounted resource, else to *fallback*."""

    def __init__(self, fallback: Any, mounts: dict[bytes, Any]) -> None:
        super().__init__()
        self.fallback = fallback
        self.mounts = mounts

    def getChildWithDefault(self, name: bytes, request: Any) -> Any:  # noqa: N802 - Twisted hook
        mounted = self.mounts.get(name)
        if mounted is not None:
            return mounted
        # Not ours: give the whole path back to the klein application.
        request.postpath.insert(0, request.prepath.pop())
        return self.fallback

    def render(self, request: Any) -> Any:
        return self.fallback.render(request)


class _App(Resource):
    """One HTML file answering its path and everything below it (client-side routing)."""

    isLeaf = True

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def render_GET(self, request: Any) -> bytes:  # noqa: N802 - Twisted hook
        with open(self.path, "rb") as handle:
            body = handle.read()
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return body


def mount_hosting(resource: Any, config: Any) -> Any:
    """*resource* with the configured app and static directory mounted beside it."""
    mounts: dict[bytes, Any] = {}
    if config.static:
        if not os.path.isdir(config.static):
            from ..config import ConfigError

            raise ConfigError(f"{config.block_name}: static: {config.static} is not a directory")
        mounts[config.static_path.strip("/").encode()] = _NoListingFile(config.static)
    if config.app:
        if not os.path.isfile(config.app):
            from ..config import ConfigError

            raise ConfigError(f"{config.block_name}: app: {config.app} is not a file")
        mounts[config.app_path.strip("/").encode()] = _App(config.app)
    if not mounts:
        return resource
    return Mounts(resource, mounts)
