"""A simulated substation served over OPC UA (asyncua's server).

Address space, namespace ``urn:edgetwin:substation`` (string node ids, also browsable by name)::

    Objects/Substation/
        Breaker1..N/    Position (Boolean, true = closed), TripCount (UInt32); with
                        ``double_point=True`` as real IEDs model it: Position (Int32, read-only:
                        0 intermediate, 1 open, 2 closed, 3 bad) and Command (Boolean, written:
                        true = close), the breaker travelling ``travel_s`` after a command
        Transformer1/   TapPosition (Int32, -16..16), OilTemp, WindingTemp (Double, degC)
        Feeder1..N/     W, VAr (Double), A (Double), V (Double, line-to-neutral)
        Bulk/           V0000..  (Double; ``bulk`` of them, all changed every update: benchmarks)

Node ids are ``ns=<ns>;s=<Object>.<Variable>``, e.g. ``ns=2;s=Feeder1.W``. Values move every
``update_s`` (a daily load shape with noise; temperatures follow the load). Security: with
``secure=True`` only Basic256Sha256 Sign and SignAndEncrypt endpoints are offered, the server has
its own certificate (``server_cert``), and clients must log in as ``username``/``password``.
``restart()`` stops and starts the server on the same port (a fault scenario); node ids stay.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID

NAMESPACE = "urn:edgetwin:substation"
APP_URI = "urn:edgetwin:substation-simulator"


class _Users:
    def __init__(self, username: str, password: str) -> None:
        self._credentials = (username, password)

    def get_user(
        self, iserver: Any, username: Any = None, password: Any = None, certificate: Any = None
    ) -> User | None:
        if (username, password) == self._credentials:
            return User(role=UserRole.User)
        return None


class SubstationSimulator:
    def __init__(
        self,
        *,
        port: int,
        breakers: int = 2,
        feeders: int = 2,
        secure: bool = False,
        cert_dir: Path | None = None,
        username: str = "edgetwin",
        password: str = "s3cret",
        update_s: float = 0.1,
        seed: int = 1,
        extra_namespaces: tuple[str, ...] = (),
        bulk: int = 0,
        double_point: bool = False,
        travel_s: float = 0.3,
    ) -> None:
        self.port = port
        self.url = f"opc.tcp://127.0.0.1:{port}/edgetwin/substation"
        self.breakers = breakers
        self.feeders = feeders
        self.secure = secure
        self.cert_dir = cert_dir
        self.username, self.password = username, password
        self.update_s = update_s
        self._rng = random.Random(seed)
        self.values: dict[str, Any] = {}
        self.ns = 2
        self._server: Server | None = None
        self._nodes: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self.tap = 0
        # registered before ours: changing them between restarts renumbers our namespace
        self.extra_namespaces = extra_namespaces
        self.bulk = bulk  # extra Bulk.V0000.. variables, all changed every update (benchmarks)
        self.writes = 0
        self.double_point, self.travel_s = double_point, travel_s
        self.commands: list[tuple[int, bool]] = []  # (breaker, close) received on Command

    @property
    def server_cert(self) -> Path:
        assert self.cert_dir is not None
        return self.cert_dir / "server-cert.der"

    def node_id(self, name: str) -> str:
        return f"ns={self.ns};s={name}"

    def variables(self) -> list[str]:
        names = []
        for b in range(1, self.breakers + 1):
            names += [f"Breaker{b}.Position", f"Breaker{b}.TripCount"]
            names += [f"Breaker{b}.Command"] if self.double_point else []
        names += ["Transformer1.TapPosition", "Transformer1.OilTemp", "Transformer1.WindingTemp"]
        for f in range(1, self.feeders + 1):
            names += [f"Feeder{f}.{q}" for q in ("W", "VAr", "A", "V")]
        names += [f"Bulk.V{i:04d}" for i in range(self.bulk)]
        return names

    def _initial(self, name: str) -> Any:
        if name.endswith(".Position"):
            return ua.Variant(2, ua.VariantType.Int32) if self.double_point else True
        if name.endswith(".Command"):
            return False
        if name.endswith(".TripCount"):
            return ua.Variant(0, ua.VariantType.UInt32)
        if name.endswith("TapPosition"):
            return ua.Variant(0, ua.VariantType.Int32)
        return 0.0

    async def start(self) -> None:
        server = Server()
        if self.secure:
            server.iserver.user_manager = _Users(self.username, self.password)  # type: ignore[assignment]
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/edgetwin/substation")
        server.set_server_name("EdgeTwin simulated substation")
        await server.set_application_uri(APP_URI)
        if self.secure:
            assert self.cert_dir is not None, "a secure server needs cert_dir"
            self.cert_dir.mkdir(parents=True, exist_ok=True)
            key = self.cert_dir / "server-key.pem"
            await setup_self_signed_certificate(
                key,
                self.server_cert,
                APP_URI,
                socket.gethostname(),
                [ExtendedKeyUsageOID.SERVER_AUTH],
                {"commonName": "EdgeTwin substation"},
            )
            await server.load_certificate(str(self.server_cert))
            await server.load_private_key(str(key))
            server.set_security_policy(
                [
                    ua.SecurityPolicyType.Basic256Sha256_Sign,
                    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ]
            )
            server.set_identity_tokens([ua.UserNameIdentityToken])
        for uri in self.extra_namespaces:
            await server.register_namespace(uri)
        self.ns = await server.register_namespace(NAMESPACE)
        root = await server.nodes.objects.add_object(self.node_id("Substation"), "Substation")
        objects: dict[str, Any] = {}
        for name in self.variables():
            obj_name, var = name.split(".")
            if obj_name not in objects:
                objects[obj_name] = await root.add_object(self.node_id(obj_name), obj_name)
            value = self.values.get(name, self._initial(name))
            node = await objects[obj_name].add_variable(self.node_id(name), var, value)
            writable = ".Command" if self.double_point else ".Position"
            if name.endswith(writable) or name.endswith("TapPosition"):
                await node.set_writable()
            self._nodes[name] = node
        if self.double_point:
            server.subscribe_server_callback(CallbackType.PostWrite, self._on_write)
        await server.start()
        self._server = server
        self._task = asyncio.create_task(self._update_loop(), name="substation-sim")

    async def _on_write(self, event: Any, _dispatcher: Any) -> None:
        """A write to BreakerN.Command: the breaker travels (intermediate, then its end)."""
        for write, status in zip(
            event.request_params.NodesToWrite, event.response_params, strict=False
        ):
            name = str(write.NodeId.Identifier)
            if name.endswith(".Command") and status.is_good():
                b, close = (
                    int(name[len("Breaker") : -len(".Command")]),
                    bool(write.Value.Value.Value),
                )
                self.commands.append((b, close))
                asyncio.get_running_loop().create_task(self._travel(b, close))

    async def _travel(self, b: int, close: bool) -> None:
        position = self._nodes[f"Breaker{b}.Position"]
        await position.write_value(ua.Variant(0, ua.VariantType.Int32))
        await asyncio.sleep(self.travel_s)
        await position.write_value(ua.Variant(2 if close else 1, ua.VariantType.Int32))
        self.values[f"Breaker{b}.Position"] = 2 if close else 1

    async def _update_loop(self) -> None:
        t = 0.0
        while True:
            await self.step(t)
            t += self.update_s
            await asyncio.sleep(self.update_s)

    async def step(self, t: float) -> None:
        """Move the measurements (also callable by tests for deterministic values)."""
        load = 0.6 + 0.3 * math.sin(t / 60.0)
        for f in range(1, self.feeders + 1):
            position = self.values.get(f"Breaker{min(f, self.breakers)}.Position", True)
            closed = position == 2 if self.double_point else position is not False
            w = (2e6 * load * (1 + self._rng.gauss(0, 0.01))) if closed else 0.0
            v = 7200.0 * (1 + self._rng.gauss(0, 0.002))
            await self._set(f"Feeder{f}.W", w)
            await self._set(f"Feeder{f}.VAr", w * 0.3)
            await self._set(f"Feeder{f}.V", v)
            await self._set(f"Feeder{f}.A", math.hypot(w, w * 0.3) / 3 / v)
        await self._set("Transformer1.OilTemp", 45.0 + 30.0 * load)
        await self._set("Transformer1.WindingTemp", 55.0 + 45.0 * load)
        if self.bulk and self._server is not None:
            for i in range(self.bulk):
                node = self._nodes[f"Bulk.V{i:04d}"]
                await self._server.write_attribute_value(
                    node.nodeid, ua.DataValue(ua.Variant(t + i))
                )
            self.writes += self.bulk

    async def _set(self, name: str, value: float) -> None:
        self.values[name] = value
        if name in self._nodes:
            await self._nodes[name].write_value(value)

    async def read(self, name: str) -> Any:
        return await self._nodes[name].read_value()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._server is not None:
            for name, node in self._nodes.items():  # keep values across a restart
                self.values[name] = await node.read_value()
            await self._server.stop()
            self._server = None
            self._nodes = {}

    async def restart(self, down_s: float = 0.0) -> None:
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()

    async def __aenter__(self) -> SubstationSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
