"""Rules benchmark: ``python bench/rules.py``. Prints figures, then one JSON line.

* ``rule_evaluations_per_s``: 1,000 meter twins x 10 rules, evaluated by their engines after
  every poll (each twin's voltages, currents, power and counters move at every poll), on one
  core (the process is pinned to CPU 0). The 10 rules: the outage, C84.1 voltage, tamper,
  loading and 15-minute demand analytics, and five configured rules -- a threshold with
  hysteresis and delays, a derived phase imbalance (published), a ramp-rate alarm, a sustained
  (sliding 60 s mean) overload alarm and a fixed 15-minute mean (published). Only the engines'
  ``evaluate`` calls are timed. Target >= 100,000/s.
* ``point_updates_ratio``: the spine benchmark's point updates/s (``bench/pipeline.py``: 100
  meter twins x 28 points through twin, report-by-exception, msgpack and a real SQLite outbox)
  with those 10 rules on every twin, as a ratio of the same run without them. Target >= 0.7.
  The two run in alternating quarter-second slices for 20 s, each with its own outbox, so that
  the rest of this shared 2-core machine (whose speed drifts by 30 % within minutes) weighs on
  both alike; the ratio of each quarter of the run is printed to show the spread.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import PointUpdates, meter_twin

from edgetwin.core.models import GOOD, Reading
from edgetwin.edge_rules.config import FloodSettings, build
from edgetwin.edge_rules.engine import RuleEngine
from edgetwin.twins.meter import MeterTwin

PH = ("phsA", "phsB", "phsC")
ANALYTICS: dict[str, Any] = {
    "nominal_v": 277.0,
    "outage": {},
    "voltage": {"on_delay_s": 30},
    "tamper": {},
    "loading": {"rating_kva": 150},
    "demand": {},
}
RULES: list[dict[str, Any]] = [
    {"name": "overcurrent", "kind": "threshold", "expr": "readingMMXU.A.phsA", "above": 300,
     "hysteresis": 10, "on_delay_s": 5, "off_delay_s": 5, "priority": "high"},
    {"name": "imbalance_pct", "kind": "derived", "units": "%", "deadband_abs": 0.5,
     "expr": "(max(readingMMXU.PhV.phsA, readingMMXU.PhV.phsB, readingMMXU.PhV.phsC) - "
             "min(readingMMXU.PhV.phsA, readingMMXU.PhV.phsB, readingMMXU.PhV.phsC)) / "
             "readingMMXU.PhV.net * 100", "above": 3},
    {"name": "ramp", "kind": "rate", "point": "readingMMXU.W.net", "window_s": 10, "per": "min",
     "above": 20_000, "publish": False, "message": "power ramping faster than 20 kW/min"},
    {"name": "sustained_w", "kind": "stats", "point": "readingMMXU.W.net", "stat": "mean",
     "window_s": 60, "above": 120_000, "publish": False, "message": "1-minute mean over 120 kW"},
    {"name": "w_15min", "kind": "stats", "point": "readingMMXU.W.net", "stat": "mean",
     "window_s": 900, "window": "fixed"},
]  # fmt: skip


def engine_for(twin: MeterTwin) -> RuleEngine:
    points = {bp.field for bp in twin.bound_points()}
    engine, _, problems = build(points, ANALYTICS, RULES, [], FloodSettings())
    assert engine is not None and not problems, problems
    assert len(engine.rules) == 10
    return engine


def bench_evaluations(n_twins: int = 1000, polls: int = 20) -> tuple[float, int]:
    """Evaluations/s of ``n_twins`` engines over ``polls`` polls each (one per second)."""
    twins = [meter_twin(i) for i in range(n_twins)]
    engines = [engine_for(t) for t in twins]
    fields = [bp.field for bp in twins[0].bound_points()]
    rng = random.Random(7)
    base = {f: 100.0 for f in fields}
    base.update({f"readingMMXU.PhV.{p}": 277.0 for p in (*PH, "net")})
    states: list[dict[str, Reading]] = [{} for _ in twins]
    outputs: list[dict[str, Reading]] = [{} for _ in twins]
    t = time.time()
    elapsed = 0.0
    evaluations = 0
    for _ in range(polls):
        t += 1.0
        for i, engine in enumerate(engines):
            points = states[i]
            for f in fields:
                value = base[f] * (1 + rng.gauss(0, 0.01))
                points[f] = Reading(f, value, GOOD, t)
            merged = {**points, **outputs[i]}
            start = time.perf_counter()
            out, _events = engine.evaluate(merged, t)
            elapsed += time.perf_counter() - start
            outputs[i].update(out)
            evaluations += len(engine.rules)
    return evaluations / elapsed, evaluations


async def bench_ratio(
    tmp: Path, seconds: float = 20.0, slice_s: float = 0.25
) -> tuple[float, float, list[float]]:
    """Point updates/s of 100 twins without rules and of 100 twins with the 10 rules each,
    run in alternating slices of ``slice_s`` (each with its own outbox) for ``seconds`` in all,
    so that whatever else the machine does falls on both alike. Returns the two rates and the
    ratio of each quarter of the run (to show the spread)."""
    plain = await PointUpdates([meter_twin(i) for i in range(100)]).open(tmp)
    twins = [meter_twin(i) for i in range(100)]
    for twin in twins:
        twin.attach_rules(engine_for(twin))
    ruled = await PointUpdates(twins).open(tmp)
    totals = {"plain": [0, 0.0], "ruled": [0, 0.0]}
    quarters: list[float] = []
    slices = int(seconds / slice_s / 2)
    q_plain, q_ruled = [0, 0.0], [0, 0.0]
    for i in range(slices):
        for name, loop, q in (("plain", plain, q_plain), ("ruled", ruled, q_ruled)):
            n, t = await loop.run(slice_s)
            totals[name][0] += n
            totals[name][1] += t
            q[0] += n
            q[1] += t
        if (i + 1) % max(1, slices // 4) == 0:
            quarters.append((q_ruled[0] / q_ruled[1]) / (q_plain[0] / q_plain[1]))
            q_plain, q_ruled = [0, 0.0], [0, 0.0]
    await plain.close()
    await ruled.close()
    rate = {k: v[0] / v[1] for k, v in totals.items()}
    return rate["plain"], rate["ruled"], quarters


def main() -> dict[str, Any]:
    results: dict[str, Any] = {}
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cpus is not None:
        os.sched_setaffinity(0, {min(cpus)})  # one core for the evaluations
    rate, n = bench_evaluations()
    if cpus is not None:
        os.sched_setaffinity(0, cpus)  # the spine runs as the agent does: its writer thread too
    results["rule_evaluations_per_s"] = round(rate)
    print(f"rule evaluations/s, 1,000 twins x 10 rules, one core: {rate:,.0f} (over {n:,})")
    tmp = Path(tempfile.mkdtemp(prefix="edgetwin-rules-bench-"))
    without, with_rules, quarters = asyncio.run(bench_ratio(tmp))
    ratio = with_rules / without
    results["point_updates_per_s_without_rules"] = round(without)
    results["point_updates_per_s_with_rules"] = round(with_rules)
    results["point_updates_ratio"] = round(ratio, 3)
    print(
        f"spine point updates/s: {without:,.0f} without rules, {with_rules:,.0f} with 10 rules "
        f"per twin: ratio {ratio:.2f} (by quarter of the run: "
        + ", ".join(f"{r:.2f}" for r in quarters)
        + ")"
    )
    targets = {"rule_evaluations_per_s": rate >= 100_000, "point_updates_ratio": ratio >= 0.7}
    print("targets: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in targets.items()))
    return results


if __name__ == "__main__":
    print(json.dumps(main()))
