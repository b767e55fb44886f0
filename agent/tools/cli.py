"""``edgetwin``: the command line for technicians (check, run, keygen, status), the central side
(subscribe) and newcomers (demo). Each sub-command is a small function; the work is elsewhere."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from edgetwin.core import __version__, registry
from edgetwin.core.errors import ConfigError, EdgeTwinError


def _setup_logging(level: str, fmt: str = "text") -> None:
    if fmt == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(_JsonFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler])
    else:
        logging.basicConfig(
            level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("asyncua").setLevel(logging.ERROR)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def cmd_check(args: argparse.Namespace) -> int:
    from edgetwin.agent.runtime.config import load_config

    cfg = load_config(args.config)
    a = cfg.agent
    print(f"config {cfg.path}: OK")
    print(
        f"agent {a.agent_id}: data in {a.data_dir}, signing key {a.signing.key_file} "
        f"(kid {a.signing.key_id})"
    )
    print(
        f"mqtt {a.mqtt.host}:{a.mqtt.port} prefix {a.mqtt.topic_prefix!r}, "
        f"max in flight {a.mqtt.max_inflight}"
    )
    print(
        f"outbox max {a.outbox.max_bytes} bytes, group commit every "
        f"{a.outbox.commit_interval_ms} ms"
    )
    print("devices:")
    for d in cfg.devices:
        where = _where(d)
        print(
            f"  {d.name}: {d.driver} {where} every {d.poll_interval_s} s, timeout {d.timeout_s} s"
        )
    print("twins:")
    for twin in cfg.twins:
        s = twin.spec
        print(f"  {s.name} ({s.kind}, mRID {s.mrid}) on {s.device}")
        for profile in twin.profiles:
            print(f"    topic {profile.topic(s.topic_prefix, s.mrid)}")
        for bp in twin.bound_points():
            e = bp.entry
            print(
                f"    {bp.field:<28} {e.table or '-':>8} {e.address!s:>6} {e.dtype:<8} "
                f"{e.order} {e.units}"
            )
        engine = getattr(twin, "rules", None)
        if engine is not None:
            print(f"    rules, in order: {', '.join(r.name for r in engine.rules)}")
            events = twin.event_profile.topic(s.topic_prefix, s.mrid)  # type: ignore[attr-defined]
            print(f"    events on {events}")
        for lock in cfg.interlocks.get(s.mrid, ()):
            print(f"    interlock: refuse {lock.action} while {lock.expr.source}")
    return 0


def _where(d: Any) -> str:
    """Where a device is, whatever its driver: a URL, a serial line, or host:port."""
    unit = f" unit {d.unit_id}" if getattr(d, "unit_id", None) is not None else ""
    if url := getattr(d, "url", None):
        return str(url)
    if port := getattr(d, "serial_port", None):
        return f"{port} {d.baudrate} {d.bytesize}{d.parity}{d.stopbits}{unit}"
    if host := getattr(d, "host", None):
        return f"{host}:{getattr(d, 'port', '?')}{unit}"
    return "(no address)"


def cmd_run(args: argparse.Namespace) -> int:
    from edgetwin.agent.runtime.app import Agent
    from edgetwin.agent.runtime.config import load_config

    cfg = load_config(args.config)
    os.umask(os.umask(0o027) | 0o027)  # whatever else it creates: nothing for others

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        agent = Agent(cfg)

        def on_signal() -> None:
            if not stop.is_set():
                stop.set()
                _stop_watchdog(agent, STOP_TIMEOUT_S)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await agent.run(stop)

    asyncio.run(main())
    return 0


STOP_TIMEOUT_S = 10.0


def _stop_watchdog(agent: Any, within: float) -> None:
    """A stop that has not finished ``within`` seconds after the signal ends the process
    (exit 70) after saying what it leaves: committed messages are safe in the outbox."""
    import threading

    def expire() -> None:
        logging.getLogger("edgetwin").critical(
            "stop did not finish within %.0f s; exiting now: %s", within, agent.pending_report()
        )
        logging.shutdown()
        os._exit(70)

    timer = threading.Timer(within, expire)
    timer.daemon = True
    timer.start()


def cmd_keygen(args: argparse.Namespace) -> int:
    from edgetwin.wire.keys import generate

    try:
        priv, pub = generate(Path(args.out), overwrite=args.force)
    except OSError as err:  # exists, a symbolic link, no permission, no room
        raise EdgeTwinError(f"keygen: {err}") from None
    print(f"private key: {priv} (mode 0600)\npublic key:  {pub}")
    return 0


def _local(config_path: str, name: str) -> tuple[Any, dict[str, Any]]:
    """A state file the agent writes, and its freshness (``agent.runtime.localstate.freshness``)."""
    from edgetwin.agent.runtime.config import load_config
    from edgetwin.agent.runtime.localstate import freshness, read_json

    cfg = load_config(config_path)
    try:
        return read_json(cfg.agent.data_dir, name), freshness(cfg.agent.data_dir, name)
    except FileNotFoundError:
        raise EdgeTwinError(f"no {name} yet in {cfg.agent.data_dir} (has the agent run?)") from None


def _stale(info: dict[str, Any]) -> bool:
    from edgetwin.agent.runtime.localstate import freshness_line

    if not info["agent_running"]:
        print(freshness_line(info), file=sys.stderr)
        return True
    return False


def cmd_status(args: argparse.Namespace) -> int:
    from edgetwin.agent.runtime.localstate import STATUS

    status, info = _local(args.config, STATUS)
    if _stale(info):  # a device is not "available" because a dead agent last saw it so
        for device in (status.get("devices") or {}).values():
            device["available"] = None
    print(json.dumps({"state": info, **status}, indent=2))
    return 0


def cmd_twin(args: argparse.Namespace) -> int:
    """``twin list``: one line per twin; ``twin show MRID``: every point, value and quality."""
    from edgetwin.agent.runtime.localstate import TWINS, freshness_line

    twins, info = _local(args.config, TWINS)
    stale = not info["agent_running"]
    print(freshness_line(info))
    if args.action == "list":
        print(f"{'mRID':<36}  {'kind':<6} {'device':<14} {'avail':<5} {'comm':<4} bad  name")
        for mrid, t in twins.items():
            bad = sum(1 for p in t["points"].values() if p["quality"]["validity"] != "good")
            avail, comm = (
                ("?" if stale else "yes" if t["available"] else "NO"),
                ("yes" if t["commissioned"] else "no"),
            )
            print(
                f"{mrid:<36}  {t['kind']:<6} {t['device']:<14} {avail:<5} {comm:<4} {bad:>3}  "
                f"{t['name']}"
            )
        return 0
    t = twins.get(args.mrid)
    if t is None:
        raise EdgeTwinError(f"no twin {args.mrid} (known: {', '.join(twins)})")
    print(
        f"{t['name']} ({t['kind']}, mRID {args.mrid}) on {t['device']}: "
        f"{'unknown' if stale else 'available' if t['available'] else 'UNAVAILABLE'}, "
        f"{'commissioned' if t['commissioned'] else 'not commissioned'}"
    )
    for field, p in t["points"].items():
        q = p["quality"]
        flags = ",".join(q.get("detailQual", {}))
        value = (
            "-"
            if p["value"] is None
            else f"{p['value']:.6g}"
            if isinstance(p["value"], float)
            else str(p["value"])
        )
        quality = q["validity"] + (f" {flags}" if flags else "")
        print(f"  {field:<48} {value:>14} {p['units']:<4} {quality}")
    return 0


def cmd_alarms(args: argparse.Namespace) -> int:
    """Active alarms of the running agent, highest priority first (from ``alarms.json``)."""
    from edgetwin.agent.runtime.localstate import ALARMS, freshness_line

    alarms, info = _local(args.config, ALARMS)
    if args.json:
        print(json.dumps({"state": info, "alarms": alarms}, indent=2))
        return 0
    print(freshness_line(info))
    if not alarms:
        print("no active alarms" if info["agent_running"] else "no alarms were active")
        return 0
    print(f"{'priority':<9} {'raised (UTC)':<20} {'twin':<20} {'alarm':<32} {'value':>10}  message")
    for a in alarms:
        raised = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(a["raisedAt"] or 0))
        value = a.get("value")
        shown = "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
        name = a["name"] + (" (chattering)" if a.get("chattering") else "")
        print(
            f"{a['priority']:<9} {raised:<20} {a['twin'][:20]:<20} {name:<32} {shown:>10}  "
            f"{a.get('message', '')}"
        )
    return 0


def cmd_supervise(args: argparse.Namespace) -> int:
    """Run asset containers from a fleet file (``agent.operations.supervise``); ``--status``
    reports."""
    import threading

    from edgetwin.agent.operations.supervise import Supervisor, report

    fleet = Path(args.fleet)
    if args.status:
        state_file = fleet.with_name("supervise.json")
        if not state_file.exists():
            raise EdgeTwinError(f"no {state_file} yet (has the supervisor run?)")
        print(report(json.loads(state_file.read_text())))
        return 0
    sup = Supervisor(fleet)
    if args.once:
        print(report(sup.reconcile().to_json()))
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sup.run(stop)
    return 0


def cmd_commission(args: argparse.Namespace) -> int:
    from edgetwin.agent.runtime.config import load_config
    from edgetwin.agent.tools.commission import commission

    result = asyncio.run(commission(load_config(args.config), args.mrid))
    for check in result.checks:
        print(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
    print(f"twin {args.mrid}: " + ("commissioned" if result.ok else "NOT commissioned"))
    return 0 if result.ok else 4


def cmd_subscribe(args: argparse.Namespace) -> int:
    from edgetwin.central import Report, Verifier, load_trust_dir, subscribe

    verifier = Verifier(load_trust_dir(Path(args.trust)), max_age_s=args.max_age)
    bad = 0

    def emit(report: Report) -> None:
        nonlocal bad
        bad += 0 if report.get("valid") else 1
        print(json.dumps(report, default=_json_default), flush=True)

    subscribe(
        args.broker, verifier, args.topic, count=args.count, timeout=args.timeout, on_report=emit
    )
    return 3 if bad else 0


def _json_default(obj: object) -> object:
    if isinstance(obj, bytes):
        return obj.hex()
    return str(obj)


def cmd_discover(args: argparse.Namespace) -> int:
    from edgetwin.agent.tools.discover import config_section, discover_modbus

    host, _, port = args.address.partition(":")
    d = asyncio.run(discover_modbus(host, int(port or 502), args.unit, args.timeout))
    print(config_section(d), end="")
    return 0


def cmd_discover_opcua(args: argparse.Namespace) -> int:
    import re

    from edgetwin.agent.tools.discover import browse_opcua, opcua_section
    from edgetwin.drivers.opcua import OpcUaConfig

    settings = {
        k: v
        for k, v in vars(args).items()
        if v is not None
        and k
        in ("security", "certificate", "private_key", "trust_dir", "username", "password_file")
    }
    config = OpcUaConfig(
        name="discover", driver="opcua", url=args.url, timeout_s=args.timeout, **settings
    )
    variables = asyncio.run(browse_opcua(config))
    if args.match:
        pattern = re.compile(args.match)
        variables = [v for v in variables if pattern.search(v.path)]
    print(opcua_section(args.url, variables), end="")
    return 0


def cmd_discover_readout(args: argparse.Namespace) -> int:
    """``discover iec62056-21 SERIAL_PORT``: one readout, its data sets and a config section."""
    from edgetwin.agent.tools.discover_scada import readout_section
    from edgetwin.drivers.iec62056_21 import Iec6205621Config, Iec6205621Driver

    config = Iec6205621Config(name="discover", driver="iec62056_21", serial_port=args.port,
                              address=args.address, timeout_s=args.timeout)  # fmt: skip
    driver = Iec6205621Driver(config, [])

    async def go() -> dict[str, tuple[str, str]]:
        await driver.connect()
        try:
            return await driver.readout()
        finally:
            await driver.close()

    data = asyncio.run(go())
    print(readout_section(args.port, driver.identification, data), end="")
    return 0


def cmd_discover_meter(args: argparse.Namespace) -> int:
    """``discover dlms ADDRESS``: associate, read the object list, print it and a section."""
    from pydantic import ValidationError

    from edgetwin.agent.tools.discover_meter import meter_section, survey
    from edgetwin.drivers.dlms import DlmsConfig, DlmsDriver

    if args.address.startswith("/"):
        device: dict[str, Any] = {"name": "meter-" + args.address.rsplit("/", 1)[-1],
                                  "driver": "dlms", "serial_port": args.address,
                                  "physical_address": args.physical}  # fmt: skip
    else:
        host, _, port = args.address.partition(":")
        device = {"name": f"meter-{host.replace('.', '-')}", "driver": "dlms", "host": host,
                  "port": int(port or 4059)}  # fmt: skip
    security = "lls" if args.password_file else "hls-gmac" if args.key_file else "none"
    device |= {"client_address": args.client, "server_address": args.server,
               "security": security}  # fmt: skip
    for key in ("password_file", "key_file", "auth_key_file"):
        if getattr(args, key):
            device[key] = str(getattr(args, key))
    try:
        config = DlmsConfig(**device, timeout_s=args.timeout)
    except ValidationError as err:  # a secret file missing or open to others, a bad address
        raise ConfigError([f"discover dlms: {e['msg'].removeprefix('Value error, ')}"
                           for e in err.errors()]) from None  # fmt: skip
    found = asyncio.run(survey(DlmsDriver(config, [])))
    print(meter_section(device, found), end="")
    return 0


def cmd_discover_scada(args: argparse.Namespace) -> int:
    """``discover dnp3`` / ``discover iec104``: interrogate, print the points and a section."""
    from edgetwin.agent.tools.discover_scada import interrogate, scada_section

    host, _, port = args.address.rpartition(":") if ":" in args.address else (args.address, "", "")
    device: dict[str, Any] = {"name": f"rtu-{host.replace('.', '-')}", "driver": args.protocol,
                              "host": host}  # fmt: skip
    if args.protocol == "dnp3":
        from edgetwin.drivers.dnp3 import Dnp3Config, Dnp3Driver

        device |= {"port": int(port or 20000), "outstation": args.outstation, "master": args.master}
        config: Any = Dnp3Config(**device, timeout_s=args.timeout, unsolicited=False)
        driver: Any = Dnp3Driver(config, [])
    else:
        from edgetwin.drivers.iec104 import Iec104Config, Iec104Driver

        device |= {"port": int(port or 2404), "common_address": args.ca}
        config = Iec104Config(**device, connect_timeout_s=args.timeout, t1_s=15, t2_s=10)
        driver = Iec104Driver(config, [])
    found = asyncio.run(interrogate(driver))
    print(scada_section(args.protocol, {**device, "poll_interval_s": 1.0}, found), end="")
    return 0


def cmd_command(args: argparse.Namespace) -> int:
    """Sign and send a control command, wait for its result event, print it as JSON."""
    from edgetwin.central import (
        CONTROLS,
        ResultWaiter,
        build_command,
        load_private,
        load_trust_dir,
        publish,
    )
    from edgetwin.central.command import curve, parse_point

    key = load_private(Path(args.key))
    now = time.time()
    # a built-in kind, or a twin plugin's: its class names its control shape (``wire.control``)
    kind = CONTROLS.get(args.kind) or getattr(
        registry.load(registry.TWINS, args.kind), "control", None
    )
    if kind is None:
        raise EdgeTwinError(f"{args.kind} twins take no control")
    try:
        schedule = curve([parse_point(text, now) for text in args.point])
        topic, envelope, command_mrid = build_command(
            key,
            args.kid,
            kind=kind,
            mrid=args.twin,
            action=args.action or ("schedule" if schedule else ""),
            schedule=schedule,
            prefix=args.prefix,
            expires_s=args.expires,
        )
    except ValueError as err:
        raise EdgeTwinError(str(err)) from None
    with ResultWaiter(
        args.broker,
        load_trust_dir(Path(args.trust)),
        kind=kind,
        mrid=args.twin,
        prefix=args.prefix,
    ) as waiter:
        publish(args.broker, topic, envelope)
        result = waiter.wait(command_mrid, args.wait, envelope)
    if result is None:
        print(json.dumps({"commandMRID": command_mrid, "result": "no_answer"}))
        return 6
    print(json.dumps(result))
    return 0 if result.get("result") in ("executed", "accepted") else 5


def cmd_demo(args: argparse.Namespace) -> int:
    from edgetwin.agent.tools.demo import run_demo

    return run_demo(duration=args.duration, broker=args.broker, data_dir=args.data_dir)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgetwin", description=__doc__)
    p.add_argument("--version", action="version", version=f"edgetwin {__version__}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("check", help="validate a config offline and print what would run")
    s.add_argument("config")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("run", help="run the agent until SIGTERM / SIGINT")
    s.add_argument("config")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("keygen", help="write an Ed25519 private key (0600) and its public PEM")
    s.add_argument("--out", required=True, help="private key path; public key: <stem>.pub.pem")
    s.add_argument("--force", action="store_true", help="overwrite an existing key")
    s.set_defaults(func=cmd_keygen)

    s = sub.add_parser("status", help="print the running agent's last status")
    s.add_argument("config")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("twin", help="technician's view of the running agent's twins")
    s.add_argument("action", choices=["list", "show"])
    s.add_argument("config")
    s.add_argument("mrid", nargs="?")
    s.set_defaults(func=cmd_twin)

    s = sub.add_parser("alarms", help="list the running agent's active alarms")
    s.add_argument("config")
    s.add_argument("--json", action="store_true", help="the alarms as JSON")
    s.set_defaults(func=cmd_alarms)

    s = sub.add_parser("supervise", help="run one agent container per asset from a fleet file")
    s.add_argument("fleet", help="fleet file: [supervisor], [models.<m>] image, [[assets]]")
    s.add_argument("--once", action="store_true", help="reconcile once, print the state, exit")
    s.add_argument("--status", action="store_true", help="print the last state and exit")
    s.set_defaults(func=cmd_supervise)

    s = sub.add_parser("commission", help="check a twin's device on site and record it")
    s.add_argument("config")
    s.add_argument("mrid")
    s.set_defaults(func=cmd_commission)

    s = sub.add_parser("subscribe", help="central side: verify and print messages as JSON lines")
    s.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    s.add_argument("--trust", required=True, help="folder of trusted <kid>.pem public keys")
    s.add_argument("--topic", action="append", help="topic filter (repeatable)")
    s.add_argument("--count", type=int, help="stop after N messages")
    s.add_argument("--timeout", type=float, help="stop after S seconds")
    s.add_argument("--max-age", type=float, default=60.0, help="live messages older: stale")
    s.set_defaults(func=cmd_subscribe)

    s = sub.add_parser("discover", help="find what a device offers; print a config section")
    disc = s.add_subparsers(dest="protocol", required=True)
    m = disc.add_parser("modbus", help="SunSpec discovery over Modbus TCP")
    m.add_argument("address", help="HOST[:PORT] (default port 502)")
    m.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    m.add_argument("--timeout", type=float, default=2.0, help="per-request timeout, seconds")
    m.set_defaults(func=cmd_discover)
    o = disc.add_parser("opcua", help="browse an OPC UA server's Objects")
    o.add_argument("url", help="opc.tcp://HOST:PORT/PATH")
    o.add_argument("--match", help="only variables whose browse path matches this regex")
    o.add_argument("--timeout", type=float, default=5.0)
    o.add_argument("--security", choices=["none", "sign", "sign_and_encrypt"])
    o.add_argument("--certificate", type=Path, help="the agent's certificate (made if missing)")
    o.add_argument("--private-key", type=Path)
    o.add_argument("--trust-dir", type=Path, help="folder of trusted server certificates")
    o.add_argument("--username")
    o.add_argument("--password-file", type=Path)
    o.set_defaults(func=cmd_discover_opcua)
    d = disc.add_parser("dnp3", help="integrity-poll a DNP3 outstation, list its points")
    d.add_argument("address", help="HOST[:PORT] (default port 20000)")
    d.add_argument("--outstation", type=int, required=True, help="its link address")
    d.add_argument("--master", type=int, default=1, help="our link address (default 1)")
    d.add_argument("--timeout", type=float, default=5.0, help="per-request timeout, seconds")
    d.set_defaults(func=cmd_discover_scada)
    i = disc.add_parser("iec104", help="interrogate an IEC 60870-5-104 station, list its objects")
    i.add_argument("address", help="HOST[:PORT] (default port 2404)")
    i.add_argument("--ca", type=int, default=1, help="common address (default 1)")
    i.add_argument("--timeout", type=float, default=10.0, help="connection timeout, seconds")
    i.set_defaults(func=cmd_discover_scada)
    r = disc.add_parser("iec62056-21", help="one IEC 62056-21 mode C readout of a meter")
    r.add_argument("port", help="the serial device (optical probe or RS-485 adapter)")
    r.add_argument("--address", default="", help="the meter's device address (default: any)")
    r.add_argument("--timeout", type=float, default=5.0)
    r.set_defaults(func=cmd_discover_readout)

    g = disc.add_parser("dlms", help="associate with a DLMS/COSEM meter, list its objects")
    g.add_argument("address", help="HOST[:PORT] (default port 4059) or a serial device (HDLC)")
    g.add_argument("--client", type=int, default=16, help="client SAP (default 16, public)")
    g.add_argument("--server", type=int, default=1, help="logical device (default 1)")
    g.add_argument("--physical", type=int, help="HDLC physical address on a serial bus")
    g.add_argument("--password-file", type=Path, help="LLS password (file, mode 0600)")
    g.add_argument("--key-file", type=Path, help="HLS-GMAC encryption key (file, mode 0600)")
    g.add_argument("--auth-key-file", type=Path, help="HLS-GMAC authentication key")
    g.add_argument("--timeout", type=float, default=5.0, help="per-request timeout, seconds")
    g.set_defaults(func=cmd_discover_meter)

    s = sub.add_parser("command", help="central side: sign and send a control command")
    s.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    s.add_argument("--key", required=True, help="the central system's Ed25519 private key")
    s.add_argument("--kid", required=True, help="its key id, as in the agent's trust file")
    s.add_argument("--trust", required=True, help="folder of the agents' public keys")
    s.add_argument("--twin", required=True, help="the twin's mRID")
    s.add_argument(
        "--kind",
        default="switch",
        help="the twin's kind: switch, breaker, recloser, solar, ess, generic or a plugin's",
    )
    s.add_argument("--action", help="open or close (switches); schedule (implied by --point)")
    s.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="PARAM=VALUE[@WHEN]",
        help="a curve point, e.g. W_net_mag=-20000@+60 (WHEN: +SECONDS or ISO 8601; default "
        "now); repeatable",
    )
    s.add_argument("--prefix", default="openfmb")
    s.add_argument("--expires", type=float, default=30.0, help="seconds the command stays valid")
    s.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the result")
    s.set_defaults(func=cmd_command)

    s = sub.add_parser("demo", help="simulated meter + local broker + agent + verified live view")
    s.add_argument("--duration", type=float, help="stop after S seconds and print a summary")
    s.add_argument(
        "--broker", help="mqtt://HOST:PORT of a running broker, or 'embedded' for the built-in one"
    )
    s.add_argument("--data-dir", help="keep keys and outbox here (default: a temporary folder)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "topic", "unset") is None:
        args.topic = ["openfmb/#"]
    _setup_logging(args.log_level, args.log_format)
    try:
        return int(args.func(args))
    except ConfigError as err:
        for line in err.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except EdgeTwinError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `edgetwin check ... | head`: the reader is gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
