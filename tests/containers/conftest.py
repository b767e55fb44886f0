"""The container suite (``make test-containers``; marker ``containers``): a real Docker engine.

Session fixtures: the engine (``dockerd --iptables=false --bridge=none`` is started if no daemon
answers), a Debian bookworm base image made with debootstrap and ``docker import`` (no registry
is reachable; cached as ``edgetwin-base:bookworm``), and the agent's image built from wheels by
``packaging/build-image.sh`` on that base. Containers use the host's network (loopback only).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = "edgetwin-base:bookworm"
IMAGE = "edgetwin:test"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    docker = pytest.importorskip("docker")
    if shutil.which("dockerd") is None:
        pytest.fail("no Docker engine: apt-get install docker.io (make test-containers does)")
    proc = None
    try:
        docker.from_env().ping()
    except Exception:
        proc = subprocess.Popen(["dockerd", "--iptables=false", "--bridge=none"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while not Path("/var/run/docker.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    client = docker.from_env()
    client.ping()
    yield client
    if proc is not None:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="session")
def base_image(docker_client: Any) -> str:
    import docker

    try:
        docker_client.images.get(BASE)
        return BASE
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory() as rootfs:
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             "bookworm", rootfs],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", BASE], stdin=tar.stdout, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        tar.wait()
    return BASE


@pytest.fixture(scope="session")
def agent_image(base_image: str) -> str:
    subprocess.run(["bash", str(ROOT / "packaging" / "build-image.sh"), IMAGE, base_image],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return IMAGE
