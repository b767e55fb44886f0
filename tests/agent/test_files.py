"""Keys and state files: private keys 0600 without following links, state not world-readable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgetwin.core.files import state_db, state_dir, write_private, write_state
from edgetwin.wire.keys import generate


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgetwin.agent", "keygen", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_a_dangling_link_does_not_get_the_key_written_to_its_target(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "stolen.key"
    target.parent.mkdir()
    (tmp_path / "agent.key").symlink_to(target)
    for force in ([], ["--force"]):
        r = keygen("--out", str(tmp_path / "agent.key"), *force)
        assert r.returncode == 2 and "symbolic link" in r.stderr and "Traceback" not in r.stderr
    assert not target.exists()


def test_force_does_not_chmod_or_write_a_links_target(tmp_path: Path) -> None:
    target = tmp_path / "shared.txt"
    target.write_text("not a key")
    target.chmod(0o644)
    (tmp_path / "agent.key").symlink_to(target)
    r = keygen("--out", str(tmp_path / "agent.key"), "--force")
    assert r.returncode == 2
    assert target.read_text() == "not a key" and mode(target) == 0o644


def test_force_over_a_0644_file_leaves_a_0600_key(tmp_path: Path) -> None:
    key = tmp_path / "agent.key"
    key.write_text("old")
    key.chmod(0o644)
    assert keygen("--out", str(key), "--force").returncode == 0
    assert mode(key) == 0o600 and key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_a_key_is_never_readable_by_others_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        priv, _ = generate(tmp_path / "k.key")
    finally:
        os.umask(old)
    assert mode(priv) == 0o600


def test_existing_key_is_not_overwritten_without_force(tmp_path: Path) -> None:
    write_private(tmp_path / "k", b"first")
    with pytest.raises(FileExistsError):
        write_private(tmp_path / "k", b"second")
    assert (tmp_path / "k").read_bytes() == b"first"


def test_state_files_folders_and_databases_are_not_world_readable(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        data = state_dir(tmp_path / "data")
        write_state(data / "status.json", "{}")
        db = state_db(data / "outbox.db")
        lax = data / "old.db"
        lax.write_bytes(b"")
        lax.chmod(0o666)
        state_db(lax)
    finally:
        os.umask(old)
    assert mode(data) == 0o750
    assert mode(data / "status.json") == 0o640 and mode(db) == 0o640
    assert mode(lax) == 0o660  # an existing file only loses what others had
    (data / "link.json").symlink_to(tmp_path / "target.json")
    with pytest.raises(FileExistsError):
        write_state(data / "link.json", "{}")
    assert not (tmp_path / "target.json").exists()


async def test_the_agents_own_files_are_not_world_readable(
    tmp_path: Path,
    keys: dict[str, Path],
    mosquitto,
    meter,  # type: ignore[no-untyped-def]
) -> None:
    from tests.helpers import meter_config, until
    from tests.test_end_to_end import running

    old = os.umask(0o022)  # a typical default: 0644 files
    try:
        cfg = meter_config(tmp_path, keys, mosquitto.port, meter.port)
        async with running(cfg) as agent:
            await until(lambda: agent.devices[0].stats.polls >= 1)
    finally:
        os.umask(old)
    data = tmp_path / "data"
    files = [p for p in data.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"outbox.db", "status.json", "twins.json"}
    assert all(mode(p) & 0o007 == 0 for p in files), {p.name: oct(mode(p)) for p in files}


def test_one_agent_per_data_folder_and_readers_see_whether_it_runs(tmp_path: Path) -> None:
    from edgetwin.agent.runtime.localstate import AgentLock, agent_running
    from edgetwin.core.errors import StartError

    assert not agent_running(tmp_path)
    first = AgentLock(tmp_path)
    first.acquire()
    assert agent_running(tmp_path)
    with pytest.raises(StartError, match="another agent is running"):
        AgentLock(tmp_path).acquire()
    first.release()
    assert not agent_running(tmp_path)  # released (or its process died): not running
