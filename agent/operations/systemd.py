"""systemd's notify protocol, without a dependency: ``READY=1`` once the agent runs,
``WATCHDOG=1`` from the reporting tick (so systemd restarts an agent whose pipeline hangs, not
only one that exits), ``STATUS=...`` lines, ``STOPPING=1`` at shutdown.

Active only under a unit with ``Type=notify`` (systemd sets ``NOTIFY_SOCKET``) and, for the
watchdog, ``WatchdogSec=`` (``WATCHDOG_USEC``); elsewhere every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path  # abstract namespace
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        #: how often to pet the watchdog: half its timeout, as systemd recommends
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and mine else None

    @property
    def active(self) -> bool:
        return bool(self._address)

    def notify(self, *lines: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(lines).encode())
        except OSError as err:
            log.warning("systemd: notify failed: %s", err)
