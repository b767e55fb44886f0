"""``python -m firmware_sim meter --port N``: run a simulated device standalone until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging


async def _serve_meter(host: str, port: int, seed: int) -> None:
    from firmware_sim.meter import MeterSimulator

    async with MeterSimulator(host=host, port=port, seed=seed):
        print(
            f"simulated meter: Modbus TCP on {host}:{port} (any unit id); Ctrl-C stops", flush=True
        )
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware_sim", description=__doc__)
    sub = p.add_subparsers(dest="device", required=True)
    m = sub.add_parser("meter", help="three-phase revenue meter over Modbus TCP")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=5020)
    m.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_meter(args.host, args.port, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
