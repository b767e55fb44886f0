"""A separately installed package adds a driver through the ``edgetwin.drivers`` entry point.

The test builds a small wheel by hand (offline: no build backend, no index), installs it with
pip into a folder of its own, and runs the real agent with that folder on its path.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from edgetwin.agent.tools.broker import Mosquitto
from tests.conftest import METER_MRID
from tests.helpers import wait_until
from tests.test_end_to_end import subscribed

DRIVER = '''
"""edgetwin-constant: a driver that reads the same value for every point."""
import time
from typing import ClassVar

from edgetwin.core.models import GOOD, Reading
from edgetwin.drivers.base import DeviceConfig


class ConstantConfig(DeviceConfig):
    value: float = 0.0


class ConstantDriver:
    config_model: ClassVar[type[DeviceConfig]] = ConstantConfig

    def __init__(self, config, points, shared=None):
        self._value = config.value

    @property
    def stats(self):
        return {"requests": 0}

    async def connect(self):
        pass

    async def read(self, points):
        now = time.time()
        return [Reading(p.key, self._value, GOOD, now) for p in points]

    async def write(self, point, value):
        raise NotImplementedError

    async def close(self):
        pass
'''


def build_wheel(folder: Path) -> Path:
    files = {
        "edgetwin_constant.py": DRIVER.encode(),
        "edgetwin_constant-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: edgetwin-constant\nVersion: 0.1\n",
        "edgetwin_constant-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: by-hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "edgetwin_constant-0.1.dist-info/entry_points.txt": b"[edgetwin.drivers]\nconstant = edgetwin_constant:ConstantDriver\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("edgetwin_constant-0.1.dist-info/RECORD,,")
    files["edgetwin_constant-0.1.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / "edgetwin_constant-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def test_an_installed_package_adds_a_driver_the_agent_uses(
    tmp_path: Path, mosquitto: Mosquitto, keys: dict[str, Path], make_config: Callable[..., Path]
) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--target",
            str(site),
            str(build_wheel(tmp_path)),
        ],
        check=True,
    )
    cfg = make_config(mqtt_port=mosquitto.port, devices=[("meter1", 1)])
    text = cfg.read_text()
    start = text.index('driver = "modbus_tcp"')
    end = text.index("[[twins]]")
    cfg.write_text(text[:start] + 'driver = "constant"\nvalue = 230.5\n' + text[end:])
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}

    check = subprocess.run(
        [sys.executable, "-m", "edgetwin.agent", "check", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert check.returncode == 0, check.stderr
    assert "meter1: constant" in check.stdout

    with subscribed(mosquitto.url, keys["trust"]) as got:
        agent = subprocess.Popen([sys.executable, "-m", "edgetwin.agent", "run", str(cfg)], env=env)
        try:
            topic = f"openfmb/metermodule/MeterReadingProfile/{METER_MRID}"
            wait_until(lambda: len(got.on(topic)) >= 1, what="a message from the plugin's device")
        finally:
            agent.terminate()
            agent.wait(15)
    mmxu = got.on(topic)[0]["payload"]["meterReading"]["readingMMXU"]
    volts = mmxu["PhV"]["phsA"]
    assert volts["cVal"]["mag"] == 230.5 and volts["q"] == {"validity": "good"}
    # 230.5 Hz is outside the point map's physical range for frequency: kept, but flagged
    assert mmxu["Hz"]["mag"] == 230.5
    assert mmxu["Hz"]["q"] == {"validity": "questionable", "detailQual": {"outOfRange": True}}
