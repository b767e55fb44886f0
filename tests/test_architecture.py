"""The tree is the architecture: the import contracts in pyproject.toml hold, and they fail on a
forbidden import; the built wheel installs one top-level name; the central package stands alone.

The contract check runs ``lint-imports`` (import-linter) on a copy of the package tree in which one
plugin imports the runtime -- the dependency the contracts exist to keep out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

from paho.mqtt import publish

from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.wire.keys import generate
from tests.conftest import METER_MRID, ROOT
from tests.helpers import wait_until

FOLDERS = ("core", "wire", "central", "agent", "drivers", "twins", "edge_rules", "firmware_sim")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the contracts of pyproject.toml over the packages under ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def package_tree(tmp_path: Path, copied: str) -> Path:
    """``tmp/edgetwin/<folder>`` for every folder: links to the repository's, ``copied`` a copy."""
    tree = tmp_path / "tree"
    (tree / "edgetwin").mkdir(parents=True)
    for folder in FOLDERS:
        target = tree / "edgetwin" / folder
        if folder == copied:
            shutil.copytree(ROOT / folder, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.symlink_to(ROOT / folder)
    return tree


def test_the_import_contracts_hold_and_fail_on_a_plugin_importing_the_runtime(
    tmp_path: Path,
) -> None:
    tree = package_tree(tmp_path, copied="drivers")
    clean = lint_imports(tree)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 broken" in clean.stdout
    # a driver that reaches into the runtime for its config
    modbus = tree / "edgetwin" / "drivers" / "modbus.py"
    modbus.write_text(
        modbus.read_text() + "\nfrom edgetwin.agent.runtime.config import AgentConfig  # noqa\n"
    )
    broken = lint_imports(tree)
    assert broken.returncode != 0
    assert "Plugins never import the runtime" in broken.stdout
    assert "BROKEN" in broken.stdout
    assert "edgetwin.drivers.modbus -> edgetwin.agent.runtime.config" in broken.stdout


def build_wheel(project: Path, out: Path) -> Path:
    """Build one of the repository's wheels offline (the venv's setuptools, no index)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps",
         "--no-index", "--wheel-dir", str(out), str(project)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    return wheel


def test_the_wheel_installs_one_namespace_with_every_module(tmp_path: Path) -> None:
    wheel = build_wheel(ROOT, tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "edgetwin",
        f"{wheel.name.split('-')[0]}-0.1.0.dist-info",
    }
    assert "edgetwin/__init__.py" not in names  # a namespace, shared with edgetwin-central
    for folder in FOLDERS:  # every module of every folder, under edgetwin.<folder>
        for source in (ROOT / folder).rglob("*.py"):
            assert f"edgetwin/{source.relative_to(ROOT).as_posix()}" in names, source
    for data in ("agent/operations/static/status.html", "twins/pointmaps/sim_meter.toml",
                 "central/py.typed"):  # fmt: skip
        assert f"edgetwin/{data}" in names
    entry_points = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith("entry_points.txt")))
        .decode()
    )
    assert "edgetwin = edgetwin.agent.tools.cli:main" in entry_points
    assert "opcua = edgetwin.drivers.opcua:OpcUaDriver" in entry_points


def requirement_closure(names: list[str]) -> set[str]:
    """Distributions ``names`` need, transitively, as installed here (extras and markers that
    do not apply skipped)."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(names)
    while todo:
        dist = distribution(todo.pop())
        if dist.metadata["Name"] in seen:
            continue
        seen.add(dist.metadata["Name"])
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_the_central_package_installs_alone_and_verifies_a_live_stream(
    tmp_path: Path, mosquitto: Mosquitto, make_config: Callable[..., Path], keys: dict[str, Path]
) -> None:
    """edgetwin-central in a fresh virtualenv that holds only it and what it declares (linked
    from this one: no index here), then its example consumer against a running agent."""
    from importlib.metadata import distribution

    wheel = build_wheel(ROOT / "packaging" / "central", tmp_path / "dist")
    metadata = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("METADATA")))
        .decode()
    )
    declared = [line.split(":", 1)[1].split("<")[0].split(">")[0].strip()
                for line in metadata.splitlines() if line.startswith("Requires-Dist:")]  # fmt: skip
    assert sorted(declared) == ["cryptography", "msgpack", "paho-mqtt"]
    assert "edgetwin/central/py.typed" in zipfile.ZipFile(wheel).namelist()  # typed (PEP 561)
    venv = tmp_path / "central-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())  # fmt: skip
    for name in requirement_closure(declared):
        dist = distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or ()}:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (site / top).exists() and top != "..":
                (site / top).symlink_to(source)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    probe = subprocess.run(
        [str(python), "-c",
         "import sys, edgetwin.central, edgetwin.central.example\n"
         "heavy = {'pymodbus', 'asyncua', 'aiosqlite', 'pydantic', 'serial', 'edgetwin.agent'}\n"
         "print(sorted(m for m in sys.modules if m in heavy or m.startswith('edgetwin.agent')))\n"
         "import importlib.util as u\n"
         "print([m for m in ('pymodbus', 'asyncua', 'aiosqlite', 'pydantic') if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split("\n")[:2] == ["[]", "[]"]  # nothing of the agent, not even there
    check = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "check"],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout  # every declared requirement is satisfied
    example_consumer_on_a_live_agent(
        python,
        mosquitto,
        make_config(mqtt_port=mosquitto.port, devices=[("meter1", port := free_port())]),
        port,
        keys,
    )


def example_consumer_on_a_live_agent(
    python: Path, mosquitto: Mosquitto, cfg: Path, meter_port: int, keys: dict[str, Path]
) -> None:
    """``python -m edgetwin.central.example`` prints the agent's verified values, and refuses a
    message no trusted key signed."""
    topic = f"openfmb/metermodule/MeterReadingProfile/{METER_MRID}"
    example = (ROOT / "central" / "example.py").read_text()
    assert len(example.splitlines()) <= 30
    procs = [
        subprocess.Popen([sys.executable, "-m", "edgetwin.firmware_sim", "meter", "--port",
                          str(meter_port)], stdout=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "edgetwin.agent", "--log-level", "warning",
                          "run", str(cfg)]),
    ]  # fmt: skip
    consumer = subprocess.Popen(
        [str(python), "-m", "edgetwin.central.example", mosquitto.url, str(keys["trust"]), topic],
        stdout=subprocess.PIPE, text=True, cwd=python.parent,  # not the repository: the wheel
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert consumer.stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(consumer.stdout or ()), daemon=True)
        reader.start()
        wanted = f"{METER_MRID} readingMMXU.PhV.phsA = "
        wait_until(lambda: any(line.startswith(wanted) for line in lines), 60, "a live voltage")
        line = next(line for line in lines if line.startswith(wanted))
        volts = float(line.removeprefix(wanted).split(" ")[0])
        assert 200 < volts < 300 and line.rstrip().endswith("[good]")  # the simulated 277 V
        publish.single(topic, b"\x81\xa1v\x01", hostname="127.0.0.1", port=mosquitto.port)
        wait_until(lambda: any(line.startswith(f"REFUSED {topic}") for line in lines), 30,
                   "the forged message refused")  # fmt: skip
    finally:
        for proc in [consumer, *procs]:
            proc.terminate()
            proc.wait(15)


def test_a_config_naming_a_driver_whose_extra_is_missing_says_which_extra(tmp_path: Path) -> None:
    """asyncua is the extra ``edgetwin[opcua]``. Its absence is simulated in a child process
    (``sys.modules["asyncua"] = None``: every import of it fails as if it were not installed),
    since this environment must have it for the OPC UA tests."""
    generate(tmp_path / "agent.key")
    cfg = tmp_path / "edgetwin.toml"
    cfg.write_text(
        'agent_id = "a1"\n[signing]\nkey_file = "agent.key"\nkey_id = "a1"\n[mqtt]\n'
        '[[devices]]\nname = "rtu"\ndriver = "opcua"\nurl = "opc.tcp://127.0.0.1:4840"\n'
        '[[twins]]\nkind = "generic"\nname = "t"\nmrid = "0b5b2c4e-0000-4000-8000-000000000001"\n'
        'device = "rtu"\npoints = [{ field = "a.b", address = "ns=2;s=x" }]\n'
    )
    without = (
        "import sys; sys.modules['asyncua'] = None\n"
        "from edgetwin.agent.tools.cli import main\n"
        f"sys.exit(main(['check', {str(cfg)!r}]))"
    )
    r = subprocess.run([sys.executable, "-c", without], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {cfg}: devices[0].driver: plugin 'opcua' needs asyncua, which is not "
        "installed: pip install 'edgetwin[opcua]'"
    ]
    installed = subprocess.run([sys.executable, "-m", "edgetwin.agent", "check", str(cfg)],
                               capture_output=True, text=True)  # fmt: skip
    assert installed.returncode == 0, installed.stderr  # with the extra, the same config is fine
