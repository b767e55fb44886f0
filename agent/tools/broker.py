"""Start and stop a local mosquitto broker on a free loopback port (demo and tests).

The broker gets its own config file (``listener <port> 127.0.0.1``, anonymous access) in a folder
of the caller's; it is stopped by its PID. Nothing here ever binds anything but 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_block(count: int, attempts: int = 50) -> int:
    """The first of ``count`` consecutive loopback ports that are all free right now."""
    for _ in range(attempts):
        base = free_port()
        if base + count > 65000:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no block of {count} free ports found")


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.02)


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


#: mosquitto acknowledges a QoS 1 message once it is queued in memory and writes its
#: persistence file only every ``autosave_interval`` seconds (default 1800) and at a clean
#: exit: a broker killed (power loss, OOM, SIGKILL) loses every acknowledged message since.
#: Saving after every change narrows that to the moment between a PUBACK and the next save
#: (docs/operations.md, "Broker settings"); our brokers run so.
DURABLE = ["autosave_on_changes true", "autosave_interval 1"]


class Mosquitto:
    """A mosquitto process; ``start()``/``stop()`` or use as a context manager."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        persistence: bool = False,
        listener_options: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.persistence = persistence
        # e.g. TLS (cafile / certfile / keyfile) or password_file lines for this listener
        self.listener_options = listener_options or ["allow_anonymous true"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        exe = mosquitto_path()
        if exe is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        lines = [
            "per_listener_settings true",
            f"listener {self.port} 127.0.0.1",
            *self.listener_options,
            "max_queued_messages 1000000",
            f"persistence {'true' if self.persistence else 'false'}",
        ]
        if os.geteuid() == 0:  # mosquitto would switch to user "mosquitto" and lose our folder
            lines.append("user root")
        if self.persistence:  # sessions and queued QoS 1 messages survive a restart
            lines.append(f"persistence_location {self.workdir}/")
            lines.extend(DURABLE)
        conf.write_text("\n".join(lines) + "\n")
        log = (self.workdir / f"mosquitto-{self.port}.log").open("ab")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
