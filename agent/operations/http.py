"""The agent's local HTTP server: health, readiness, metrics and the technician's status page.

::

    GET /healthz     200 while the pipeline is alive (its reporting tick ran recently), else 503
    GET /readyz      200 when the broker session is up and every device was polled recently,
                     else 503; the body says which check failed
    GET /metrics     Prometheus text format (agent.metrics)
    GET /api/status  JSON: the agent's status, every twin's live values with quality, the
                     active alarms and the recent events (what the status page shows)
    GET /            the status page (read-only; refreshes itself from /api/status)

Read-only by construction: only GET and HEAD are served, nothing changes state. It binds to
127.0.0.1 by default (``[http] bind``); exposing it beyond the host is the operator's choice
(a Kubernetes pod needs ``bind = "0.0.0.0"`` for its probes). A small asyncio server -- no web
framework -- so it runs on the same event loop and costs nothing between requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from edgetwin.core.errors import StartError

log = logging.getLogger(__name__)

Handler = Callable[[], Awaitable[tuple[int, str, bytes]]]
MAX_REQUEST = 8192
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def status_page() -> bytes:
    return resources.files("edgetwin.agent.operations").joinpath("static/status.html").read_bytes()


def as_json(code: int, body: Any) -> tuple[int, str, bytes]:
    return code, "application/json", json.dumps(body, default=str).encode()


class HttpServer:
    def __init__(self, routes: Mapping[str, Handler], bind: str, port: int) -> None:
        self._routes = routes
        self._bind = bind
        self._port = port
        self._server: asyncio.Server | None = None
        self.port = port  # the bound port (when 0 was asked, the one the system chose)

    async def start(self) -> None:
        """Listen; raises ``StartError`` (one line: where and why) when it cannot."""
        try:
            self._server = await asyncio.start_server(self._serve, self._bind, self._port)
        except OSError as err:
            raise StartError(
                f"http: cannot listen on {self._bind}:{self._port}: "
                f"{os.strerror(err.errno) if err.errno else err} "
                "(another agent, or another program, has the port? see [http] port)"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("http: serving health, metrics and the status page on %s:%d", self._bind,
                 self.port)  # fmt: skip

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        try:
            method, target, _ = head[:MAX_REQUEST].split(b"\r\n", 1)[0].decode().split(" ", 2)
        except ValueError:
            method, target = "", ""
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            code, ctype, body = 405, "text/plain", b"read-only: GET and HEAD only\n"
        elif path in self._routes:
            try:
                code, ctype, body = await self._routes[path]()
            except Exception as err:  # a broken page must not take the agent down
                log.exception("http: %s failed", path)
                code, ctype, body = 503, "text/plain", f"{err}\n".encode()
        else:
            code, ctype, body = 404, "text/plain", b"not found\n"
        headers = (
            f"HTTP/1.1 {code} {REASONS.get(code, '')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        try:
            writer.write(headers.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
