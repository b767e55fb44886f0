"""The docs a central-system vendor implements from say what the code does.

Every worked example in docs/control.md (```json <name>``` blocks) is fed to the code that reads
such messages, and every row of its topic tables is compared with the profiles the twins use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from edgetwin.agent.runtime.config import load_config
from edgetwin.central.command import control_shape
from edgetwin.core import registry
from edgetwin.twins.base import event_message
from edgetwin.twins.control import parse_frame
from edgetwin.wire.envelope import b64url, parse_header
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "control.md").read_text()
EXAMPLES = {m[1]: json.loads(m[2]) for m in re.finditer(r"```json (\S+)\n(.*?)```", DOC, re.S)}
KINDS = ["switch", "breaker", "recloser", "ess", "solar", "generic"]


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The control example's breaker and ESS twins, and a switch on the breaker's points."""
    import shutil

    from edgetwin.wire.keys import generate

    folder = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "packaging" / "control", folder / "packaging" / "control")
    generate(folder / "var" / "control" / "keys" / "substation-ctl-01.key")
    for kid in ("scada-1", "dispatch-1", "planner-1"):
        generate(folder / "packaging" / "control" / "central" / f"{kid}.key")
    cfg = load_config(folder / "packaging" / "control" / "edgetwin.toml")
    by_kind = {t.spec.kind: t for t in cfg.twins}
    by_kind["switch"] = registry.load(registry.TWINS, "switch")(by_kind["breaker"].spec)
    return by_kind


def test_the_examples_are_all_there() -> None:
    assert set(EXAMPLES) >= {"header", "breaker-open", "switch-close", "ess-schedule",
                             "breaker-executed", "breaker-refused-unverified", "breaker-shed"}  # fmt: skip


def test_the_header_example_is_a_header_the_agent_accepts() -> None:
    h = parse_header(b64url(json.dumps(EXAMPLES["header"]).encode()).decode())
    assert (h.kid, h.exp is not None) == ("scada-1", True)


@pytest.mark.parametrize(("example", "kind", "action"),
                         [("breaker-open", "breaker", "open"), ("switch-close", "switch", "close"),
                          ("ess-schedule", "ess", "schedule")])  # fmt: skip
def test_each_command_example_is_a_command_its_twin_accepts(
    twins: dict[str, Any], example: str, kind: str, action: str
) -> None:
    twin, body = twins[kind], EXAMPLES[example]
    frame = parse_frame(body, twin.control_profile)
    assert frame.equipment_mrid == twin.spec.mrid  # not wrong_equipment
    assert twin.parse_command(body).action == action


def table(title: str) -> dict[str, list[str]]:
    section = DOC[DOC.index(title) :]
    rows = re.findall(r"^\| `(\w+)` \| (.+) \|$", section[: section.index("\n\n", 200)], re.M)
    return {kind: [c.strip().strip("`") for c in cells.split(" | ")] for kind, cells in rows}


def test_the_topic_tables_are_the_profiles_the_twins_use() -> None:
    controls, results = table("## Control maps"), table("## Results")
    assert set(controls) == set(results) == set(KINDS)
    for kind in KINDS:
        shape, cls = control_shape(kind), registry.load(registry.TWINS, kind)
        control, event = shape.control, shape.event
        assert (cls.control_profile, cls.event_profile) == (control, event)  # one shape, both sides
        topic, equipment, body = controls[kind]
        assert topic == control.topic("openfmb", "<mRID>") and equipment == control.equipment
        assert body.startswith(control.body + ".")
        assert results[kind] == [event.topic("openfmb", "<mRID>"), f"{event.body}.commandResult"]


@pytest.mark.parametrize(
    "example", ["breaker-executed", "breaker-refused-unverified", "breaker-shed"]
)
def test_each_result_example_has_the_shape_the_agent_publishes(
    twins: dict[str, Any], example: str
) -> None:
    doc = EXAMPLES[example]
    result = doc["breakerEvent"]["commandResult"]
    made = event_message(twins["breaker"], "commandResult", result, 1796200000.0).payload
    assert set(made) == set(doc)  # the same top-level keys
    assert made["breaker"] == doc["breaker"]
    documented = {"result", "reason", "detail", "readback", "action", "kid", "seq", "commandMRID",
                  "schedulePoint", "points", "count", "commands"}  # fmt: skip
    assert set(result) <= documented


def test_readme_tells_verifiers_seq_is_per_agent_and_birth_death_count_apart() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "per kid" not in readme and "from that `kid`" not in readme
    assert "one `seq` stream per agent" in readme and "`bd: true`" in readme


def test_refusal_reasons_listed_are_the_codes() -> None:
    listed = set(re.findall(r"`(\w+)`", DOC[DOC.index("Refusal reasons:") :].split("\n\n")[0]))
    code = (ROOT / "agent" / "runtime" / "control.py").read_text() + (
        ROOT / "twins" / "control.py"
    ).read_text()
    used = set(re.findall(r'Refused\(\s*"(\w+)"', code)) | set(
        re.findall(r'BadCommand\(\s*"(\w+)"', code)
    )
    used |= set(re.findall(r'_refuse\([^,]+, "(\w+)"', code)) | {"shed", "bad_signature",
                                                                   "unknown_key", "malformed",
                                                                   "oversized"}  # fmt: skip
    assert used <= listed, used - listed
    assert Path  # (imported for type hints of fixtures)


def test_the_central_api_table_is_the_packages_public_api() -> None:
    import edgetwin.central

    doc = (ROOT / "docs" / "central.md").read_text()
    api = doc[doc.index("## API") :]
    documented = {
        name
        for row in re.findall(r"^\| (.+?) \|", api, re.M)
        for name in re.findall(r"`(\w+)", row)
    } - {"name"}
    assert documented == set(edgetwin.central.__all__)
    for name in documented:
        assert getattr(edgetwin.central, name) is not None
