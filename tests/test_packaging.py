"""Deployment files: the Kubernetes manifests against the Kubernetes schemas (kubernetes-validate
carries them: offline), the systemd unit through ``systemd-analyze`` (verify and the offline
security review; systemd itself does not run in this container), and, in the separate
``packaging`` suite (it needs the package index), an air-gapped bundle installed with no index."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from edgetwin.agent.runtime.config import AgentFile

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "packaging" / "kubernetes" / "edgetwin.yaml"
UNIT = ROOT / "packaging" / "systemd" / "edgetwin.service"


def documents() -> list[dict]:  # type: ignore[type-arg]
    return [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d]


@pytest.mark.parametrize("version", ["1.28.0", kubernetes_validate.latest_version()])
def test_kubernetes_manifests_validate_against_the_schemas(version: str) -> None:
    docs = documents()
    assert [d["kind"] for d in docs] == ["ConfigMap", "Service", "StatefulSet"]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any error
    broken = documents()[2]
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):  # the validator does catch typos
        kubernetes_validate.validate(broken, version, strict=True)


def test_kubernetes_probes_config_and_volumes_agree() -> None:
    config_map, _service, sts = documents()
    agent = AgentFile.model_validate(tomllib.loads(config_map["data"]["edgetwin.toml"]))
    assert agent.http is not None and agent.http.bind == "0.0.0.0"
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == agent.http.port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["state"] == str(agent.data_dir)  # the outbox is on the persistent volume
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    assert str(agent.signing.key_file).startswith(mounts["signing"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_compose_example_runs_the_agent_with_its_broker_and_devices() -> None:
    compose = yaml.safe_load((ROOT / "packaging" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"mosquitto", "meter", "agent"}
    agent = services["agent"]
    assert agent["environment"]["EDGETWIN_MQTT_HOST"] == "mosquitto"
    assert any(v.endswith(":/var/lib/edgetwin") for v in agent["volumes"])  # outbox on a volume
    cfg = ROOT / "packaging" / "compose" / "edgetwin.toml"
    parsed = AgentFile.model_validate(tomllib.loads(cfg.read_text()))
    assert parsed.devices[0]["host"] == "meter" and parsed.mqtt.host == "mosquitto"


def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed: run scripts/system-deps.sh")
    return tool


def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    edgetwin = Path(sys.executable).with_name("edgetwin")
    unit = tmp_path / "edgetwin.service"
    unit.write_text(UNIT.read_text().replace("/opt/edgetwin/venv/bin/edgetwin", str(edgetwin)))
    verify = subprocess.run([analyze(), "verify", "--man=no", str(unit)], capture_output=True,
                            text=True)  # fmt: skip
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    review = subprocess.run([analyze(), "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True)  # fmt: skip
    exposure = re.search(r"Overall exposure level for edgetwin.service: ([0-9.]+)", review.stdout)
    assert exposure is not None, review.stdout[-2000:] + review.stderr
    assert float(exposure.group(1)) <= 3.0  # systemd's scale: 0 safest .. 10 unprotected
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "User=edgetwin",
                 "NoNewPrivileges=yes", "ProtectSystem=strict"):  # fmt: skip
        assert line in text


@pytest.mark.packaging
def test_air_gapped_bundle_installs_with_no_index(tmp_path: Path) -> None:
    build = subprocess.run(
        ["bash", str(ROOT / "packaging" / "bundle.sh"), "x86_64", str(tmp_path / "dist")],
        capture_output=True, text=True, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (bundle,) = (tmp_path / "dist").glob("edgetwin-*-x86_64.tar.gz")
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "site", filter="data")
    (folder,) = (tmp_path / "site").iterdir()
    assert (folder / "install.sh").exists() and (folder / "systemd" / "edgetwin.service").exists()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-index", "--find-links",
         str(folder / "wheels"), "edgetwin[opcua]"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]  # the bundle carries the extras
    subprocess.run([str(venv / "bin" / "python"), "-c", "import edgetwin.drivers.opcua"],
                   check=True)  # fmt: skip
    version = subprocess.run([str(venv / "bin" / "edgetwin"), "--version"], capture_output=True,
                             text=True, check=True)  # fmt: skip
    assert version.stdout.startswith("edgetwin ")
