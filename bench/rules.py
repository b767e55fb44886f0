"""Rules benchmark: ``python bench/rules.py``. Prints figures, then one JSON line.

* ``rule_evaluations_per_s``: 1,000 meter twins x 10 rules, evaluated by their engines after
  every poll (each twin's voltages, currents, power and counters move at every poll), on one
  core (the process is pinned to CPU 0). The 10 rules: the outage, C84.1 voltage, tamper,
  loading and 15-minute demand analytics, and five configured rules -- a threshold with
  hysteresis and delays, a derived phase imbalance, a rate of change, a sliding 60 s mean and a
  fixed 15-minute mean. Only the engines' ``evaluate`` calls are timed. Target >= 100,000/s.
* ``point_updates_ratio``: the spine benchmark's point updates/s (``bench/pipeline.py``: 100
  meter twins x 28 points through twin, report-by-exception, msgpack and a real SQLite outbox)
  with those 10 rules on every twin, as a ratio of the same run without them. Target >= 0.7.
  The two runs alternate three times and the medians are compared.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import bench_point_updates, meter_twin

from agent.models import GOOD, Reading
from edge_rules.config import FloodSettings, build
from edge_rules.engine import RuleEngine
from twins.meter import MeterTwin

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
    {"name": "dW_dt", "kind": "rate", "point": "readingMMXU.W.net", "window_s": 10,
     "deadband_abs": 100},
    {"name": "w_mean_60s", "kind": "stats", "point": "readingMMXU.W.net", "stat": "mean",
     "window_s": 60, "deadband_abs": 100},
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


async def bench_ratio(tmp: Path, rounds: int = 3) -> tuple[float, float]:
    """Median point updates/s without and with the 10 rules on each of 100 twins."""
    without, with_rules = [], []
    for _ in range(rounds):
        without.append(await bench_point_updates(tmp, seconds=2.0))
        twins = [meter_twin(i) for i in range(100)]
        for twin in twins:
            twin.attach_rules(engine_for(twin))
        with_rules.append(await bench_point_updates(tmp, seconds=2.0, twins=twins))
    return statistics.median(without), statistics.median(with_rules)


def main() -> dict[str, Any]:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # one core
    results: dict[str, Any] = {}
    rate, n = bench_evaluations()
    results["rule_evaluations_per_s"] = round(rate)
    print(f"rule evaluations/s, 1,000 twins x 10 rules, one core: {rate:,.0f} (over {n:,})")
    tmp = Path(tempfile.mkdtemp(prefix="edgetwin-rules-bench-"))
    without, with_rules = asyncio.run(bench_ratio(tmp))
    results["point_updates_per_s_without_rules"] = round(without)
    results["point_updates_per_s_with_rules"] = round(with_rules)
    results["point_updates_ratio"] = round(with_rules / without, 3)
    print(
        f"spine point updates/s: {without:,.0f} without rules, {with_rules:,.0f} with 10 rules "
        f"per twin: ratio {with_rules / without:.2f}"
    )
    targets = {
        "rule_evaluations_per_s": rate >= 100_000,
        "point_updates_ratio": with_rules / without >= 0.7,
    }
    print("targets: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in targets.items()))
    return results


if __name__ == "__main__":
    print(json.dumps(main()))
