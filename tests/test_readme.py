"""README's command sequences run as written: "Running it for real" and "Signed control".

Each ```sh block is taken from README.md as it stands and run by bash, line by line, in a fresh
folder holding a copy of the repository's files (``git ls-files``), with the venv of this run. The
only changes: the well-known ports (1883, 5020, 5030, 5040, 9108) become free ones -- in the
commands and in the copied configs alike, and ``EDGETWIN_MQTT_PORT`` for a config that leaves
the broker at its default -- so the test never collides with a broker on the machine;
background jobs (``&``) get a second to listen and are stopped at the end. Each line must
succeed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgetwin.agent.tools.broker import free_port
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
PORTS = ("1883", "5020", "5030", "5040", "9108")


def block(heading: str) -> str:
    section = README[README.index(heading) :]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def fresh_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    (dest / ".venv").symlink_to(Path(sys.prefix))  # the environment running these tests
    return dest


def run_sequence(script: str, folder: Path, log: Path) -> subprocess.CompletedProcess[str]:
    ports = {p: str(free_port()) for p in PORTS}
    for config in folder.glob("packaging/**/*.toml"):
        text = config.read_text()
        for old, new in ports.items():
            text = re.sub(rf"\b{old}\b", new, text)
        config.write_text(text)
    for old, new in ports.items():
        script = re.sub(rf"\b{old}\b", new, script)
    # each line must succeed; wait for what a background job provides; stop them at the end
    lines = []
    for line in script.replace("\\\n", " ").splitlines():
        lines.append(line)
        if line.rstrip().endswith("&"):
            lines.extend(ready(line, set(ports.values())))
    wrapped = "\n".join(["set -eu", "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT",
                         "cd " + str(folder), 'export PATH="$PATH:/usr/sbin"', *lines])  # fmt: skip
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "EDGETWIN_MQTT_PORT": ports["1883"],
    }  # configs that leave the broker at its default
    return subprocess.run(["bash", "-c", wrapped], capture_output=True, text=True, timeout=240,
                          env=env)  # fmt: skip


def ready(line: str, ports: set[str]) -> list[str]:
    """Shell lines that wait (at most 60 s) until a background job is of use: its ports listen;
    an agent has written its status (its sessions are up by then)."""
    out = [f"timeout 60 bash -c 'until (: >/dev/tcp/127.0.0.1/{p}) 2>/dev/null; do sleep 0.1; done'"
           for p in re.findall(r"\b\d{4,5}\b", line) if p in ports]  # fmt: skip
    if match := re.search(r"edgetwin run (\S+)", line):
        out.append(f"timeout 60 bash -c 'until .venv/bin/edgetwin status {match[1]} "
                   ">/dev/null 2>&1; do sleep 0.2; done'")  # fmt: skip
    return out


@pytest.mark.parametrize("heading", ["## Running it for real", "## Signed control"])
def test_a_documented_sequence_runs_as_written(tmp_path: Path, heading: str) -> None:
    folder = fresh_copy(tmp_path / "repo")
    script = re.sub(r"#.*$", "", block(heading), flags=re.M)  # comments off, commands as written
    r = run_sequence(script, folder, tmp_path / "log")
    assert r.returncode == 0, (
        f"exit {r.returncode}\nstdout:\n{r.stdout[-1500:]}\nstderr:\n{r.stderr[-2500:]}"
    )
    if heading == "## Running it for real":
        assert r.stdout.count('"valid": true') >= 10  # subscribe saw 10 verified messages
        assert '"agentId": "substation-demo-01"' in r.stdout  # and status printed
    else:
        assert r.stdout.count('"result": "executed"') == 1 and '"result": "accepted"' in r.stdout
