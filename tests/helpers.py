"""Small helpers for tests that wait on real I/O (never used to assert on timing)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Wait (polling the event loop) until ``condition()`` holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.01)


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
    from firmware_sim.site import site_config

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
        "agent",
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
