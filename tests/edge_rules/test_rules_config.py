"""Rules, analytics and interlocks in the config: each mistake gives one clear line naming the
file, the key, the rule and (for expressions) the position."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgetwin.agent.runtime.config import load_config
from edgetwin.core.errors import ConfigError
from edgetwin.core.models import FAILURE, GOOD, Reading
from edgetwin.wire.keys import generate
from tests.agent.test_config import GOOD as METER_CONFIG

BREAKER = METER_CONFIG.replace('kind = "meter"', 'kind = "breaker"').replace(
    'point_map = "sim_meter"', 'point_map = "sim_breaker"'
)

BAD = [
    pytest.param(
        '[[twins.rules]]\nname = "x"\nkind = "derived"\nexpr = "readingMMXU.PhV.phsD * 2"\n',
        "twins[0].rules[0].expr: rule 'x': position 1: unknown point 'readingMMXU.PhV.phsD'",
        id="unknown-point",
    ),
    pytest.param(
        '[[twins.rules]]\nname = "x"\nkind = "derived"\nexpr = "readingMMXU.Hz * (2 +"\n',
        "twins[0].rules[0].expr: rule 'x': position 22: expected a value, found the end",
        id="syntax",
    ),
    pytest.param(
        '[[twins.rules]]\nname = "x"\nkind = "derived"\nexpr = "open(\'/etc/passwd\')"\n',
        "twins[0].rules[0].expr: rule 'x': position 1: unknown function 'open'",
        id="not-python",
    ),
    pytest.param(
        '[[twins.rules]]\nname = "x"\nkind = "trend"\n',
        "twins[0].rules[0].kind: no plugin 'trend' in edgetwin.rules "
        "(known: derived, rate, stats, threshold)",
        id="unknown-kind",
    ),
    pytest.param(
        '[[twins.rules]]\nname = "x"\nkind = "threshold"\n',
        "twins[0].rules[0].expr: required key is missing",
        id="missing-expr",
    ),
    pytest.param(
        '[[twins.rules]]\nname = "x"\nkind = "threshold"\nexpr = "readingMMXU.Hz"\n'
        'above = 61\npriority = "urgent"\n',
        "twins[0].rules[0].priority: Input should be 'critical', 'high', 'medium' or 'low'",
        id="priority",
    ),
    pytest.param(
        '[[twins.rules]]\nname = "readingMMXU"\nkind = "derived"\nexpr = "1"\n'
        '[[twins.rules]]\nname = "readingMMXU"\nkind = "derived"\nexpr = "2"\n',
        "twins[0].rules[1].name: 'readingMMXU' is already a point of this twin",
        id="duplicate-name",
    ),
    pytest.param(
        '[[twins.rules]]\nname = "a"\nkind = "derived"\nexpr = "b + 1"\n'
        '[[twins.rules]]\nname = "b"\nkind = "derived"\nexpr = "2"\n',
        "twins[0].rules[0].expr: rule 'a': position 1: unknown point 'b'",
        id="later-rule",
    ),
    pytest.param(
        '[[twins.rules]]\nname = "r"\nkind = "stats"\npoint = "readingMMXU.Hz"\nwindow_s = 0\n',
        r"twins[0].rules[0].window_s: Input should be greater than 0",
        id="window",
    ),
    pytest.param(
        '[[twins.rules]]\nname = "r"\nkind = "rate"\npoint = "nope"\nwindow_s = 5\n',
        "twins[0].rules[0]: rule 'r': point: unknown point 'nope'",
        id="rate-point",
    ),
    pytest.param(
        "[twins.analytics.outage]\n",
        "twins[0].analytics.nominal_v: required by analytics.outage",
        id="nominal",
    ),
    pytest.param(
        "[twins.analytics]\nnominal_v = 277\n[twins.analytics.outage]\nrestore = 5\n",
        "twins[0].analytics.outage.restore: unknown key (not allowed here)",
        id="analytics-key",
    ),
    pytest.param(
        '[twins.analytics.loading]\nrating_kva = 100\nva_field = "readingMMXU.VA.phsD"\n',
        "twins[0].analytics.loading: unknown point 'readingMMXU.VA.phsD'",
        id="loading-field",
    ),
    pytest.param(
        '[twins.analytics]\nnominal_v = 277\n[twins.analytics.tamper]\nflag = "@Tamper"\n',
        "twins[0].analytics.tamper: unknown point '@Tamper'",
        id="tamper-flag",
    ),
    pytest.param(
        '[[twins.analytics.demand_response]]\nid = "dr"\nstart = 2026-01-02T00:00:00Z\n'
        "end = 2026-01-01T00:00:00Z\n",
        "twins[0].analytics.demand_response[0]: Value error, end must be after start",
        id="dr-window",
    ),
    pytest.param(
        '[[twins.analytics.demand_response]]\nid = "dr"\nstart = 2026-01-01T00:00:00\n'
        "end = 2026-01-01T01:00:00Z\n",
        "twins[0].analytics.demand_response[0].start: Input should have timezone info",
        id="dr-timezone",
    ),
]


def write(tmp_path: Path, text: str) -> Path:
    if not (tmp_path / "k.key").exists():
        generate(tmp_path / "k.key")
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def problems(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return "\n".join(err.value.problems)


@pytest.mark.parametrize(("section", "expected"), BAD)
def test_bad_rules_are_named_with_file_key_and_position(
    tmp_path: Path, section: str, expected: str
) -> None:
    path = write(tmp_path, METER_CONFIG + section)
    message = problems(path)
    assert f"{path}: {expected}" in message, message


def test_interlocks_are_expressions_over_the_twins_state(tmp_path: Path) -> None:
    good = write(
        tmp_path,
        BREAKER + '[[twins.rules]]\nname = "hot"\nkind = "threshold"\nexpr = "readingMMXU.A.phsA"\n'
        'above = 500\n[[twins.interlocks]]\naction = "close"\nwhen = "hot or @Fault"\n'
        'reason = "overcurrent or fault"\n',
    )  # fmt: skip
    cfg = load_config(good)
    (lock,) = cfg.interlocks[cfg.twins[0].spec.mrid]
    assert lock.expr.names == ("hot", "@Fault") and lock.reason == "overcurrent or fault"
    ok, on = Reading("hot", False, GOOD, 1.0), Reading("hot", True, GOOD, 1.0)
    fault = Reading("@Fault", False, GOOD, 1.0)
    assert lock.blocks({"hot": ok, "@Fault": fault}) is None
    assert lock.blocks({"hot": on, "@Fault": fault}) == "overcurrent or fault"
    unknown = Reading("@Fault", None, FAILURE, 1.0)
    assert lock.blocks({"hot": ok, "@Fault": unknown}) == "@Fault is not known with good quality"
    bad = write(
        tmp_path,
        BREAKER + '[[twins.interlocks]]\naction = "close"\nwhen = "@Fault or cold"\n'
        '[[twins.interlocks]]\naction = "explode"\nfield = "@Fault"\nequals = true\n',
    )  # fmt: skip
    message = problems(bad)
    assert f"{bad}: twins[0].interlocks[0].when: position 11: unknown point 'cold'" in message
    assert (
        f"{bad}: twins[0].interlocks[1].action: this breaker twin accepts open, close, "
        "not 'explode'" in message
    )
