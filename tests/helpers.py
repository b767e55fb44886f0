"""Small helpers for tests that wait on real I/O (never used to assert on timing)."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Wait (polling the event loop) until ``condition()`` holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.01)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Poll the async ``check`` until it holds (bounded generously for a loaded machine)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {check.__name__}"
        await asyncio.sleep(0.02)


_IMAGES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


async def image(driver: Any, points: Any) -> dict[str, Any]:
    """Read ``driver`` and return the latest reading of every point, as a twin keeps it: an
    event-driven driver (``reports_changes``) returns only what changed since its last read."""
    seen = _IMAGES.setdefault(driver, {})
    for r in await driver.read(points):
        seen[r.point] = r
    return dict(seen)


async def reconnected_after_loss(driver: Any, points: Any) -> None:
    """Wait until ``driver`` reports its device lost (``DeviceUnavailable`` from a read), then
    close and connect it again, as the runtime does after its backoff."""
    from edgetwin.core.errors import DeviceUnavailable

    async def lost() -> bool:
        try:
            await driver.read(points)
        except DeviceUnavailable:
            return True
        return False

    await eventually(lost)
    await driver.close()
    await driver.connect()


async def signed_command(
    url: str,
    trust_dir: Path,
    key: Any,
    *,
    kind: str,
    mrid: str,
    action: str,
    timeout: float = 20,
    kid: str = "scada-1",
    registers: list[str] | None = None,
) -> dict[str, Any] | None:
    """Sign a command as central key ``scada-1``, publish it, and wait for its verified result
    event (in a thread: paho's client blocks)."""
    from edgetwin.central.command import ResultWaiter, build_command, publish
    from edgetwin.wire.keys import load_trust_dir

    topic, envelope, cmd = build_command(
        key, kid, kind=kind, mrid=mrid, action=action, registers=registers
    )

    def roundtrip() -> dict[str, Any] | None:
        with ResultWaiter(url, load_trust_dir(trust_dir), kind=kind, mrid=mrid) as waiter:
            publish(url, topic, envelope)
            return waiter.wait(cmd, timeout)

    return await asyncio.to_thread(roundtrip)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


def write_config(
    tmp_path: Path, keys: dict[str, Path], mqtt_port: int, body: str, **site: Any
) -> Path:
    """``tmp_path/edgetwin.toml``: a ``test-agent`` with no simulated meters and a quiet status
    (``site`` overrides ``site_config``'s keywords), followed by ``body`` (devices, twins...)."""
    from edgetwin.firmware_sim.site import site_config

    settings: dict[str, Any] = {"meters": [], "status_interval_s": 3600, **site}
    head = site_config(
        agent_id="test-agent",
        data_dir=tmp_path / "data",
        key_file=keys["private"],
        mqtt={"port": mqtt_port},
        **settings,
    )
    cfg = tmp_path / "edgetwin.toml"
    cfg.write_text(head + "\n" + body)
    return cfg


def meter_config(
    tmp_path: Path, keys: dict[str, Path], mqtt_port: int, meter_port: int, **site: Any
) -> Path:
    """A test-agent config polling one simulated meter, ``meter1`` on ``meter_port``."""
    return write_config(tmp_path, keys, mqtt_port, "", meters=[("meter1", meter_port)], **site)


async def discover_into_config(
    argv: list[str], tmp_path: Path, keys: dict[str, Path], mqtt_port: int
) -> tuple[Path, str]:
    """Run ``edgetwin discover <argv>``, append its section to a test-agent config (polling
    every 0.2 s); return the config path and the section."""
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edgetwin.agent",
        "discover",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    section = out.decode()
    body = section.replace("poll_interval_s = 1.0", "poll_interval_s = 0.2")
    return write_config(tmp_path, keys, mqtt_port, body), section


class SmallFilesystem:
    """A real file system of ``size`` bytes (tmpfs) mounted at ``path``, to fill up for real.
    ``fill()`` takes all of its free space with a filler file; ``free()`` gives it back."""

    def __init__(self, path: Path, size: int) -> None:
        import os
        import subprocess

        import pytest

        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root (CI and developer machines are root)")
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=True, capture_output=True)  # fmt: skip
        self.path = path
        self._filler = path / "filler"

    def available(self) -> int:
        import os

        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Take all free space, then give ``leave`` bytes of it back."""
        import os

        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (65536, 4096, 512):  # unbuffered: stop exactly where the disk does
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)
        if leave:
            os.truncate(self._filler, max(0, self._filler.stat().st_size - leave))

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        import subprocess

        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


def opcua_breaker(url: str, mrid: str, poll_s: float = 0.2) -> str:
    """Config sections: the simulated substation's Breaker1 as a breaker twin over OPC UA."""
    return f"""
[[devices]]
name = "sub1"
driver = "opcua"
url = "{url}"
poll_interval_s = {poll_s}
timeout_s = 0.5

[[twins]]
mrid = "{mrid}"
kind = "breaker"
device = "sub1"
points = [{{ field = "@Pos", address = "ns=2;s=Breaker1.Position", dtype = "bool", kind = "state" }}]
"""


class ShiftedClock:
    """The real clock moved by ``offset`` seconds (``shift`` adds to it): an agent and a
    simulated meter sharing one see hours pass at once, while sleeps stay real."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def shift(self, seconds: float) -> None:
        self.offset += seconds

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
