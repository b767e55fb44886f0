"""Config input never crashes or hangs ``check``: exit 0 or 2, one line per problem, no traceback.

Hypothesis mutates the shipped example configs (values replaced by hostile ones, keys removed,
bytes garbled, files truncated) and runs ``edgetwin check`` on each in-process; the named cases
from the field are checked one by one, as a real process, for their message.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetwin.agent.tools.cli import main
from edgetwin.wire.keys import generate
from tests.conftest import ROOT, example_config

HOSTILE_VALUES = [
    '""', '" "', '"a\\nb"', '"999.1.1.1"', '"/dev/zero"', '"/"', "nan", "inf", "-inf", "1e-9",
    "0", "-1", "1e308", "99999999999999999999", "true", "[]", "[nan, 1]", "{}", '"\\u0000"',
    '"' + "x" * 5000 + '"', "[[1]]", '"@OpCnt ** @OpCnt ** @OpCnt"', '"' + "(" * 3000 + '"',
]  # fmt: skip
VALUE_LINE = re.compile(r"^(\s*[A-Za-z_]+\s*=\s*)(.+)$", re.M)


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """The example config (its key made) and the control example (its keys made)."""
    folder = tmp_path_factory.mktemp("examples")
    plain = example_config(folder)
    control = folder / "packaging" / "control"
    shutil.copytree(ROOT / "packaging" / "control", control)
    generate(folder / "var" / "control" / "keys" / "substation-ctl-01.key")
    for kid in ("scada-1", "dispatch-1", "planner-1"):
        generate(control / "central" / f"{kid}.key")
    yield [plain, control / "edgetwin.toml"]


def check(path: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()

    def hung(*_: object) -> None:
        raise TimeoutError("check did not finish in 20 s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["check", str(path)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, err.getvalue()


def test_the_examples_pass_check(examples: list[Path]) -> None:
    for path in examples:
        assert check(path) == (0, ""), path


@st.composite
def mutated(draw: st.DrawFn, text: str) -> bytes:
    kind = draw(st.sampled_from(["values", "delete", "bytes", "truncate"]))
    lines = VALUE_LINE.findall(text)
    if kind == "values":
        for _ in range(draw(st.integers(1, 3))):
            key, value = draw(st.sampled_from(lines))
            text = text.replace(key + value, key + draw(st.sampled_from(HOSTILE_VALUES)), 1)
        return text.encode()
    if kind == "delete":
        key, value = draw(st.sampled_from(lines))
        return text.replace(key + value, "", 1).encode()
    data = bytearray(text.encode())
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(data=st.data())
def test_any_mutation_of_an_example_gives_exit_0_or_2_and_no_traceback(
    examples: list[Path], data: st.DataObject
) -> None:
    source = data.draw(st.sampled_from(examples))
    path = source.with_name("fuzzed.toml")
    path.write_bytes(data.draw(mutated(source.read_text())))
    code, err = check(path)
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert err.strip(), "a refusal says why"


CASES = {
    "not-utf8": (b'agent_id = "\xff\xfe"\n', "not UTF-8 text (byte 13, line 1)"),
    "host-empty": ('host = ""', "mqtt.host"),
    "host-space": ('host = " "', "mqtt.host"),
    "host-newline": ('host = "a\\nb"', "mqtt.host"),
    "host-999": ('host = "999.1.1.1"', "is not a valid IPv4 address"),
    "poll-1e-9": ("poll_interval_s = 1e-9", "devices[0].poll_interval_s"),
    "point-map-dev-zero": ('point_map = "/dev/zero"', "not a regular file"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_named_mistakes_exit_2_with_one_clear_line(examples: list[Path], case: str) -> None:
    change, expected = CASES[case]
    source = examples[0]
    text = source.read_text()
    if isinstance(change, bytes):
        data = change + text.encode()
    elif change.startswith("host"):
        data = text.replace('[mqtt]\nhost = "127.0.0.1"', f"[mqtt]\n{change}", 1).encode()
    elif change.startswith("poll"):
        data = re.sub(r"poll_interval_s = [0-9.]+", change, text, count=1).encode()
    else:
        data = re.sub(r'point_map = "[^"]+"', change, text, count=1).encode()
    assert data != text.encode()
    path = source.with_name(f"{case}.toml")
    path.write_bytes(data)
    r = subprocess.run([sys.executable, "-m", "edgetwin.agent", "check", str(path)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert expected in r.stderr, r.stderr


def test_range_nan_and_scale_zero_are_refused(tmp_path: Path, examples: list[Path]) -> None:
    source = examples[0]
    pm = tmp_path / "map.toml"
    pm.write_text('[[points]]\nfield = "Hz.mag"\naddress = 0\nrange = [nan, 1]\n\n'
                  '[[points]]\nfield = "W.net.cVal.mag"\naddress = 2\nscale = 0\n')  # fmt: skip
    text = re.sub(r'point_map = "[^"]+"', f'point_map = "{pm}"', source.read_text(), count=1)
    path = source.with_name("nan.toml")
    path.write_text(text)
    code, err = check(path)
    assert code == 2
    assert "points[0].range" in err and "points[1]" in err and "scale must not be 0" in err, err


def test_check_reports_problems_of_every_stage_in_one_run(examples: list[Path]) -> None:
    """Three mistakes in three parts: the broker port, a device, a twin's rule; and a trust
    file naming a missing key. One run of check names them all."""
    source = examples[1]
    text = source.read_text()
    text = text.replace("[control]", "[mqtt]\nport = 70000\n\n[control]", 1)
    text = text.replace("port = 5030", "port = -1", 1)
    path = source.with_name("three.toml")
    path.write_text(text)
    trust = source.with_name("trust.toml")
    original = trust.read_text()
    trust.write_text(original.replace("scada-1.pub.pem", "missing.pub.pem", 1))
    try:
        code, err = check(path)
    finally:
        trust.write_text(original)
    assert code == 2
    assert "mqtt.port" in err and "devices[0].port" in err, err
    assert "control.trust_file" in err and "missing.pub.pem" in err, err
