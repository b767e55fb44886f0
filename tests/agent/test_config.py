"""Configuration: every shipped sample loads, and each malformed config gives its clear error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgetwin.agent.runtime.config import load_config
from edgetwin.core.errors import ConfigError
from edgetwin.wire.keys import generate
from tests.conftest import example_config

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
agent_id = "a1"
[signing]
key_file = "k.key"
key_id = "a1"
[[devices]]
name = "m1"
driver = "modbus_tcp"
host = "127.0.0.1"
port = 5020
[[twins]]
mrid = "5f0a3c2e-8d1b-4f7a-9c3e-1b2d3e4f5a6b"
kind = "meter"
device = "m1"
point_map = "sim_meter"
"""


def test_shipped_example_config_is_valid(tmp_path: Path) -> None:
    cfg = load_config(example_config(tmp_path))
    assert [d.name for d in cfg.devices] == ["meter1"]
    (twin,) = cfg.twins
    assert len(twin.bound_points()) == 29  # 6 quantities x 4 + Hz + 3 counters + tamper bit
    engine = twin.rules  # type: ignore[attr-defined]
    assert [r.name for r in engine.rules] == [
        "outage", "voltage", "tamper", "loading", "demand", "hz_deviation",
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def signing_key(tmp_path: Path) -> Path:
    """GOOD's key_file, next to the config."""
    return generate(tmp_path / "k.key")[0]


def test_minimal_config_and_defaults(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(GOOD)
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.agent.mqtt.port == 1883 and cfg.agent.mqtt.max_inflight == 50
    assert cfg.agent.signing.key_file == tmp_path / "k.key"  # relative to the config's folder
    assert cfg.devices[0].unit_id == 1  # type: ignore[attr-defined]


def edit(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


BAD = [
    pytest.param("agent_id = [1", r"c\.toml: not valid TOML", id="toml-syntax"),
    pytest.param(
        edit('agent_id = "a1"\n', ""),
        r"c\.toml: agent_id: required key is missing",
        id="missing-agent-id",
    ),
    pytest.param(
        edit("port = 5020", "port = 70000"),
        r"c\.toml: devices\[0\]\.port: Input should be less than or equal to 65535 \(got 70000\)",
        id="port-range",
    ),
    pytest.param(
        edit("port = 5020", 'port = "five"'),
        r"devices\[0\]\.port: Input should be a valid integer",
        id="port-type",
    ),
    pytest.param(
        edit('host = "127.0.0.1"', 'hots = "127.0.0.1"'),
        r"devices\[0\]\.host: required key is missing\n.*devices\[0\]\.hots: unknown key",
        id="typo-key",
    ),
    pytest.param(
        edit('driver = "modbus_tcp"', 'driver = "iec61850"'),
        r"devices\[0\]\.driver: no plugin 'iec61850' in edgetwin\.drivers \(known: .*modbus_tcp",
        id="unknown-driver",
    ),
    pytest.param(
        edit('device = "m1"', 'device = "m2"'),
        r"twins\[0\]\.device: unknown device 'm2' \(devices: m1\)",
        id="unknown-device",
    ),
    pytest.param(
        edit('mrid = "5f0a3c2e-8d1b-4f7a-9c3e-1b2d3e4f5a6b"', 'mrid = "meter-1"'),
        r"twins\[0\]\.mrid: Value error, must be a UUID",
        id="mrid-not-uuid",
    ),
    pytest.param(
        edit('kind = "meter"', 'kind = "toaster"'),
        r"twins\[0\]\.kind: no plugin 'toaster' in edgetwin\.twins",
        id="unknown-twin-kind",
    ),
    pytest.param(
        edit('point_map = "sim_meter"', 'point_map = "nope.toml"'),
        r"twins\[0\]\.point_map: cannot read .*nope\.toml",
        id="missing-point-map",
    ),
    pytest.param(
        edit(
            'point_map = "sim_meter"',
            'points = [{field = "readingMMXU.Watts", address = 0, table = "holding"}]',
        ),
        r"twins\[0\]: 'readingMMXU\.Watts' is not a field of MeterReadingProfile",
        id="unknown-profile-field",
    ),
    pytest.param(
        edit(
            'point_map = "sim_meter"',
            'points = [{field = "readingMMXU.Hz", address = 0, table = "eeprom"}]',
        ),
        r"twins\[0\]: table must be one of holding, input, coil, discrete",
        id="bad-table",
    ),
    pytest.param(
        edit(
            'point_map = "sim_meter"',
            'points = [{field = "readingMMXU.Hz", address = 0, table = "holding", dtype = "float16"}]',
        ),
        r"twins\[0\]\.points\[0\]\.dtype: Input should be 'bool', 'int16'",
        id="bad-dtype",
    ),
    pytest.param(
        edit(
            'point_map = "sim_meter"',
            'points = [{field = "readingMMXU.Hz", address = 0, table = "holding", deadband_pct = 1}]',
        ),
        r"twins\[0\]\.points\[0\]: Value error, deadband_pct needs a range",
        id="pct-without-range",
    ),
    pytest.param(
        GOOD
        + GOOD.split("[[devices]]")[1]
        .replace("[[twins]]", "[[twins]]", 0)
        .join(["[[devices]]", ""]),
        r"devices\[1\]\.name: duplicate device name 'm1'",
        id="duplicate-device",
    ),
    pytest.param(
        GOOD + '[twins.overrides."readingMMXU.Foo"]\ndeadband_abs = 1\n',
        r"twins\[0\]\.overrides\.readingMMXU\.Foo: no point feeds this field",
        id="override-unknown-field",
    ),
    pytest.param(
        edit("[signing]", "[mqtt]\nmax_inflight = 0\n[signing]"),
        r"mqtt\.max_inflight: Input should be greater than or equal to 1",
        id="inflight",
    ),
    pytest.param(
        edit(
            'driver = "modbus_tcp"',
            'driver = "dlms"\nsecurity = "none"\nload_profile = "1.0.99.1.0"',
        ),
        r"devices\[0\]\.load_profile: String should match pattern",
        id="dlms-obis",
    ),
    pytest.param(
        edit('driver = "modbus_tcp"', 'driver = "dlms"\nsecurity = "hls-gmac"'),
        r"devices\[0\]: .*hls-gmac' needs key_file and auth_key_file",
        id="dlms-keys",
    ),
    pytest.param(
        edit(
            'driver = "modbus_tcp"', 'driver = "dlms"\nsecurity = "lls"\npassword_file = "nowhere"'
        ),
        r"devices\[0\].*nowhere: No such file",
        id="dlms-password-file",
    ),
    pytest.param(
        edit("[signing]", "[metering]\npush_port = 70000\n[signing]"),
        r"metering\.push_port: Input should be less than or equal to 65535",
        id="push-port",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_malformed_config_names_file_key_and_expectation(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = "\n".join(err.value.problems)
    assert str(path) in message
    assert re.search(expected, message), message


def test_missing_or_wrong_signing_key(tmp_path: Path, signing_key: Path) -> None:
    (tmp_path / "c.toml").write_text(GOOD)
    signing_key.unlink()
    with pytest.raises(
        ConfigError, match=r"c\.toml: signing\.key_file: cannot read .*k\.key.*edgetwin keygen"
    ):
        load_config(tmp_path / "c.toml")
    signing_key.write_text("not a key")
    with pytest.raises(ConfigError, match=r"signing\.key_file: .*k\.key is not a PEM private key"):
        load_config(tmp_path / "c.toml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_environment_overrides_the_broker_and_secrets(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(GOOD)
    (tmp_path / "pw").write_text("secret\n")  # read by check as by run
    key = generate(tmp_path / "other.key")[0]
    env = {
        "EDGETWIN_MQTT_HOST": "broker.local",
        "EDGETWIN_MQTT_PORT": "8883",
        "EDGETWIN_MQTT_USERNAME": "agent",
        "EDGETWIN_MQTT_PASSWORD_FILE": str(tmp_path / "pw"),
        "EDGETWIN_SIGNING_KEY_FILE": str(key),
        "EDGETWIN_HTTP_BIND": "0.0.0.0",
    }
    cfg = load_config(tmp_path / "c.toml", env)
    m = cfg.agent.mqtt
    assert (m.host, m.port, m.username, m.password_file) == (
        "broker.local", 8883, "agent", tmp_path / "pw",
    )  # fmt: skip
    assert cfg.agent.signing.key_file == key
    assert cfg.agent.http is not None and cfg.agent.http.bind == "0.0.0.0"
    assert load_config(tmp_path / "c.toml", {}).agent.mqtt.host == "127.0.0.1"  # the file's


def test_a_bad_override_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(GOOD)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.toml", {"EDGETWIN_MQTT_PORT": "eighty"})
    (line,) = err.value.problems
    assert line.startswith(f"{tmp_path / 'c.toml'}: mqtt.port (from $EDGETWIN_MQTT_PORT):")
