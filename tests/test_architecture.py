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
from pathlib import Path

from tests.conftest import ROOT

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
