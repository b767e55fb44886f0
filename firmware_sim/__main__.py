"""``python -m edgetwin.firmware_sim meter --port N [--count K]``: run simulated meters until
Ctrl-C;
``breaker`` / ``battery --port N``: a simulated breaker or battery (controllable);
``substation``: the OPC UA substation;
``dlms --port N [--count K]``: DLMS/COSEM smart meters (TCP wrapper; ``--serial`` for HDLC);
``python -m edgetwin.firmware_sim run SCENARIO``: run a fault scenario
(``firmware_sim/scenario.py``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import threading
from pathlib import Path
from typing import Any


async def _serve_meters(host: str, port: int, seed: int, count: int) -> None:
    from edgetwin.firmware_sim.meter import MeterSimulator

    async with contextlib.AsyncExitStack() as stack:
        for i in range(count):
            await stack.enter_async_context(MeterSimulator(host=host, port=port + i, seed=seed + i))
        ports = f"{port}..{port + count - 1}" if count > 1 else str(port)
        print(
            f"simulated meter: Modbus TCP on {host}:{ports} (any unit id); Ctrl-C stops", flush=True
        )
        await asyncio.Event().wait()


async def _serve_substation(port: int, bulk: int, update_s: float) -> None:
    from edgetwin.firmware_sim.opcua_substation import SubstationSimulator

    async with SubstationSimulator(port=port, bulk=bulk, update_s=update_s) as sim:
        print(f"simulated substation: OPC UA at {sim.url}; Ctrl-C stops", flush=True)
        await asyncio.Event().wait()


async def _serve_one(kind: str, port: int) -> None:
    from edgetwin.firmware_sim.battery import BatterySimulator
    from edgetwin.firmware_sim.breaker import BreakerSimulator

    sim = BatterySimulator(port=port) if kind == "battery" else BreakerSimulator(port=port)
    async with sim:
        print(f"simulated {kind}: Modbus TCP on 127.0.0.1:{port}; Ctrl-C stops", flush=True)
        await asyncio.Event().wait()


def _serve_scada(args: Any) -> None:
    """A DNP3 or IEC 104 station until Ctrl-C (they run in their own threads)."""
    if args.device == "dnp3":
        from edgetwin.firmware_sim.dnp3_outstation import Dnp3Station

        port = None if args.serial else args.port
        addresses = tuple(args.outstations)
        station: Any = Dnp3Station(port, serial=args.serial, addresses=addresses,
                                   analogs=args.analogs, refresh_s=args.refresh_s,
                                   travel_s=args.travel_s, event_buffer=5000)  # fmt: skip
    else:
        from edgetwin.firmware_sim.iec104_station import Iec104Station

        station = Iec104Station(args.port)
    with station:
        logging.info("%s station on %s", args.device, getattr(args, "serial", None) or args.port)
        threading.Event().wait()


async def _serve_dlms(args: Any) -> None:
    from edgetwin.firmware_sim.dlms_meter import DlmsMeter, MeterState

    def make(i: int, port: int) -> DlmsMeter:
        state = MeterState(serial=f"EDG{i + 1:07d}", history_days=args.days,
                           period_s=args.period_s)  # fmt: skip
        return DlmsMeter(port, state=state, security=args.security,
                         password=args.password.encode(), ek=bytes(range(16)),
                         ak=bytes(range(16, 32)))  # fmt: skip

    if args.serial:
        from edgetwin.firmware_sim.dlms_hdlc import HdlcMeterBus

        bus = {17 + i: make(i, 0) for i in range(args.count)}
        with HdlcMeterBus(args.serial, bus):
            logging.info("%d DLMS meters on %s (physical addresses 17..)", args.count, args.serial)
            await asyncio.Event().wait()
    meters = [await make(i, args.port + i).start() for i in range(args.count)]
    logging.info("%d DLMS meters on 127.0.0.1:%d..%d (%s)", len(meters), args.port,
                 args.port + len(meters) - 1, args.security)  # fmt: skip
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgetwin.firmware_sim", description=__doc__)
    sub = p.add_subparsers(dest="device", required=True)
    r = sub.add_parser("run", help="run a fault scenario file (see firmware_sim/scenario.py)")
    r.add_argument("scenario", type=Path)
    m = sub.add_parser("meter", help="three-phase revenue meter over Modbus TCP")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=5020)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--count", type=int, default=1, help="serve N meters on consecutive ports")
    for kind, text in [
        ("breaker", "breaker (point map sim_breaker)"),
        ("battery", "battery / ESS (point map sim_battery)"),
    ]:
        b = sub.add_parser(kind, help=f"controllable {text} over Modbus TCP")
        b.add_argument("--port", type=int, default=5030 if kind == "breaker" else 5040)
    o = sub.add_parser("substation", help="OPC UA substation (breakers, transformer, feeders)")
    o.add_argument("--port", type=int, default=4840)
    o.add_argument("--bulk", type=int, default=0, help="extra variables changing every update")
    o.add_argument("--update-s", type=float, default=0.1)
    d = sub.add_parser("dnp3", help="DNP3 outstations (breakers, feeders, events) on TCP or serial")
    d.add_argument("--port", type=int, default=20000)
    d.add_argument("--serial", help="serve on this serial device instead (a socat pty end)")
    d.add_argument("--outstations", type=int, nargs="+", default=[10], help="link addresses")
    d.add_argument("--analogs", type=int, default=0, help="extra analogs changing every refresh")
    d.add_argument("--refresh-s", type=float, default=0.2, help="measurements move this often")
    d.add_argument("--travel-s", type=float, default=0.3, help="a breaker's travel time")
    i = sub.add_parser("iec104", help="IEC 60870-5-104 controlled station (breakers, feeders)")
    i.add_argument("--port", type=int, default=2404)
    g = sub.add_parser("dlms", help="DLMS/COSEM smart meters (load profile, billing, event logs)")
    g.add_argument("--port", type=int, default=4059)
    g.add_argument("--count", type=int, default=1, help="serve N meters on consecutive ports")
    g.add_argument("--serial", help="serve them on this serial device, HDLC (a socat pty end)")
    g.add_argument("--security", choices=["none", "lls", "hls-gmac"], default="lls")
    g.add_argument("--password", default="12345678", help="the LLS password")
    g.add_argument("--days", type=float, default=35, help="days of load profile held")
    g.add_argument("--period-s", type=int, default=900, help="the load profile's period")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    with contextlib.suppress(KeyboardInterrupt):
        if args.device == "run":
            from edgetwin.firmware_sim import scenario

            asyncio.run(scenario.run(scenario.load(args.scenario)))
        elif args.device in ("breaker", "battery"):
            asyncio.run(_serve_one(args.device, args.port))
        elif args.device in ("dnp3", "iec104"):
            _serve_scada(args)
        elif args.device == "dlms":
            asyncio.run(_serve_dlms(args))
        elif args.device == "substation":
            asyncio.run(_serve_substation(args.port, args.bulk, args.update_s))
        else:
            asyncio.run(_serve_meters(args.host, args.port, args.seed, args.count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
