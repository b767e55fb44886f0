"""OPC UA driver (asyncua): batched polling or subscriptions, Basic256Sha256, username login.

* ``mode = "poll"``: each read is one Read service call for all the device's points.
  ``mode = "subscribe"``: at connect the driver creates one subscription (publishing interval
  ``publishing_interval_ms``) monitoring every point; notifications update a cache, and a read
  returns the cache. Either way the runtime's schedule and our report-by-exception decide what
  is published: the server's own deadband is not used (it compares with the previous sample).
* Security: ``none``, or Basic256Sha256 with ``sign`` / ``sign_and_encrypt``. The agent's
  certificate and key (``certificate``, ``private_key``) are generated on first use when missing
  (``edgetwin opcua-cert`` makes them ahead of time); the server's certificate must be in the
  ``trust_dir`` folder (DER or PEM), otherwise the connection is refused. ``username`` with
  ``password`` or ``password_file`` logs in; else anonymous.
* Node ids: ``ns=2;s=Feeder1.W`` or, robust to a server that renumbers its namespaces,
  ``nsu=urn:edgetwin:substation;s=Feeder1.W``; namespace URIs are resolved at every connect.
* Quality from the StatusCode: Good -> good; Uncertain -> questionable; Bad -> invalid
  (``badReference`` for an unknown node, ``failure`` otherwise). A lost session raises
  ``DeviceUnavailable``; the runtime reconnects with backoff, which recreates the session and
  the subscription and resolves the node ids again (so a server restart heals by itself).

asyncua's own auto-reconnect is off: the runtime owns reconnects, as for every driver.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from asyncua import Client, ua  # the extra edgetwin[opcua]: the registry names it when missing
from pydantic import Field, field_validator, model_validator

from edgetwin.core.errors import DeviceRejected, DeviceUnavailable
from edgetwin.core.files import private_umask
from edgetwin.core.models import (
    BAD_REFERENCE,
    FAILURE,
    GOOD,
    OLD_DATA,
    Quality,
    Reading,
    Validity,
    Value,
)
from edgetwin.core.points import PointSpec
from edgetwin.drivers.base import DeviceConfig, SourceTimestamps, check_host

NODE_ID = re.compile(r"^(ns=\d+;|nsu=[^;]+;)?(i=\d+|s=.+|g=[0-9a-fA-F-]{36}|b=.+)$")
QUESTIONABLE = Quality(Validity.QUESTIONABLE, frozenset({"inaccurate"}))
BAD_NODE_ID_UNKNOWN = 0x80340000


class OpcUaConfig(DeviceConfig):
    url: str = Field(pattern=r"^opc\.tcp://")
    mode: Literal["poll", "subscribe"] = "poll"
    publishing_interval_ms: int = Field(500, ge=10, le=3_600_000)
    security: Literal["none", "sign", "sign_and_encrypt"] = "none"
    certificate: Path | None = None
    private_key: Path | None = None
    application_uri: str = "urn:edgetwin:agent"
    trust_dir: Path | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url_host(cls, value: str) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            port = parts.port  # raises ValueError beyond 0..65535
        except ValueError as err:
            raise ValueError(f"{value!r}: {err}") from None
        check_host(parts.hostname or "")
        if port is None:
            raise ValueError(f"{value!r} needs a port, e.g. opc.tcp://host:4840")
        return value

    @model_validator(mode="after")
    def _security_needs_files(self) -> OpcUaConfig:
        if self.security != "none":
            missing = [
                k for k in ("certificate", "private_key", "trust_dir") if not getattr(self, k)
            ]
            if missing:
                raise ValueError(f"security {self.security!r} needs {', '.join(missing)}")
        return self


def status_quality(code: int) -> Quality:
    severity = code >> 30
    if severity == 0:
        return GOOD
    if severity == 1:
        return QUESTIONABLE
    return BAD_REFERENCE if (code & 0xFFFF0000) == BAD_NODE_ID_UNKNOWN else FAILURE


def _value(raw: Any) -> Value:
    if isinstance(raw, bool | int | float):
        return raw
    return None  # strings, structures: not a measurement this runtime carries


class _Cache:
    """Subscription handler: the latest DataValue per node id string."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[Any, int, float]] = {}
        self.notifications = 0

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.notifications += 1
        dv = data.monitored_item.Value
        ts = dv.SourceTimestamp.timestamp() if dv.SourceTimestamp else time.time()
        self.latest[node.nodeid.to_string()] = (val, dv.StatusCode.value, ts)


class OpcUaDriver:
    """``opcua``: see the module docstring."""

    config_model: ClassVar[type[DeviceConfig]] = OpcUaConfig
    #: SourceTimestamp moves only when a value changes: a steady breaker is not old data
    source_timestamps: ClassVar[SourceTimestamps] = "change"

    def __init__(
        self, config: OpcUaConfig, points: Sequence[PointSpec], shared: dict[str, Any] | None = None
    ) -> None:
        for p in points:
            if not isinstance(p.address, str) or not NODE_ID.match(p.address):
                raise ValueError(
                    f"OPC UA address must be a node id (ns=2;s=Name), got {p.address!r}"
                )
        self._config = config
        self._client: Any = None
        self._nodes: dict[str, Any] = {}  # point key -> Node
        self._cache = _Cache()
        self._subscription: Any = None
        self._stats = {"requests": 0}
        self._notified = 0  # notifications of earlier sessions

    @property
    def stats(self) -> dict[str, int]:
        return {**self._stats, "notifications": self._notified + self._cache.notifications}

    @property
    def session(self) -> Any:
        """The connected asyncua client, for optional abilities such as browsing."""
        if self._client is None:
            raise DeviceUnavailable("not connected")
        return self._client

    async def __aenter__(self) -> OpcUaDriver:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _secure(self, client: Any) -> None:
        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        from asyncua.crypto.truststore import TrustStore
        from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
        from cryptography.x509.oid import ExtendedKeyUsageOID

        cfg = self._config
        assert cfg.certificate and cfg.private_key and cfg.trust_dir
        cfg.certificate.parent.mkdir(parents=True, exist_ok=True)
        with private_umask():  # asyncua writes the private key itself: 0600, not 0644
            await setup_self_signed_certificate(
                cfg.private_key,
                cfg.certificate,
                cfg.application_uri,
                socket.gethostname(),
                [ExtendedKeyUsageOID.CLIENT_AUTH],
                {"commonName": f"EdgeTwin {cfg.name}"},
            )
        if cfg.private_key.exists() and cfg.private_key.stat().st_mode & 0o077:
            cfg.private_key.chmod(0o600)  # made by an earlier version
        store = TrustStore([cfg.trust_dir], [])
        try:
            await store.load()
        except ValueError as err:  # asyncua cannot build an empty store
            raise DeviceRejected(
                f"{cfg.trust_dir}: no trusted server certificate (put the server's there)"
            ) from err
        client.certificate_validator = CertificateValidator(
            CertificateValidatorOptions.TRUSTED
            | CertificateValidatorOptions.TIME_RANGE
            | CertificateValidatorOptions.PEER_SERVER,
            store,
        )
        mode = "Sign" if cfg.security == "sign" else "SignAndEncrypt"
        await client.set_security_string(
            f"Basic256Sha256,{mode},{cfg.certificate},{cfg.private_key}"
        )

    async def connect(self) -> None:
        cfg = self._config
        client = Client(cfg.url, timeout=cfg.timeout_s)
        client.application_uri = cfg.application_uri
        if cfg.username:
            client.set_user(cfg.username)
            password = cfg.password
            if cfg.password_file is not None:
                password = cfg.password_file.read_text().strip()
            client.set_password(password or "")
        try:
            if cfg.security != "none":
                await self._secure(client)
            await client.connect()
        except ua.UaStatusCodeError as err:
            raise DeviceRejected(f"{cfg.url}: {err}") from err
        except (OSError, TimeoutError, ConnectionError, ua.UaError) as err:
            raise DeviceUnavailable(f"{cfg.url}: {err or type(err).__name__}") from err
        self._client = client
        self._nodes = {}
        self._notified += self._cache.notifications
        self._cache = _Cache()
        self._subscription = None

    async def _resolve(self, points: Sequence[PointSpec]) -> list[Any]:
        """Node objects for ``points``; ``nsu=`` namespace URIs resolved on this session."""
        nodes = []
        for p in points:
            node = self._nodes.get(p.key)
            if node is None:
                text = str(p.address)
                if text.startswith("nsu="):
                    uri, _, rest = text[4:].partition(";")
                    try:
                        index = await self._client.get_namespace_index(uri)
                    except ValueError:
                        index = None
                    text = f"ns={index};{rest}" if index is not None else f"ns=65535;{rest}"
                node = self._client.get_node(ua.NodeId.from_string(text))
                self._nodes[p.key] = node
            nodes.append(node)
        return nodes

    async def read(self, points: Sequence[PointSpec]) -> list[Reading]:
        if self._client is None:
            raise DeviceUnavailable("not connected")
        try:
            await self._client.check_connection()
            nodes = await self._resolve(points)
            if self._config.mode == "subscribe":
                return await self._from_subscription(points, nodes)
            self._stats["requests"] += 1
            values = await self._client.read_attributes(nodes)
        except (OSError, TimeoutError, ConnectionError, ua.UaError) as err:
            raise DeviceUnavailable(f"{self._config.url}: {err or type(err).__name__}") from err
        now = time.time()
        out = []
        for p, dv in zip(points, values, strict=True):
            quality = status_quality(dv.StatusCode.value)
            ts = dv.SourceTimestamp.timestamp() if dv.SourceTimestamp else now
            value = _value(dv.Value.Value) if dv.Value is not None else None
            if value is None and quality.is_good:
                quality = BAD_REFERENCE
            out.append(Reading(p.key, value if quality.is_good else None, quality, ts))
        return out

    async def _from_subscription(
        self, points: Sequence[PointSpec], nodes: list[Any]
    ) -> list[Reading]:
        if self._subscription is None:
            self._subscription = await self._client.create_subscription(
                self._config.publishing_interval_ms, self._cache
            )
            self._stats["requests"] += 2
            handles = await self._subscription.subscribe_data_change(nodes)
            now = time.time()
            initial = await self._client.read_attributes(nodes)  # do not wait for the first push
            for node, handle, dv in zip(nodes, handles, initial, strict=True):
                key = node.nodeid.to_string()
                if isinstance(handle, ua.StatusCode):  # the server refused to monitor it
                    self._cache.latest[key] = (None, handle.value, now)
                elif key not in self._cache.latest:
                    ts = dv.SourceTimestamp.timestamp() if dv.SourceTimestamp else now
                    self._cache.latest[key] = (dv.Value.Value, dv.StatusCode.value, ts)
        now = time.time()
        out = []
        for p, node in zip(points, nodes, strict=True):
            latest = self._cache.latest.get(node.nodeid.to_string())
            if latest is None:
                out.append(Reading(p.key, None, OLD_DATA, now))  # no notification yet
                continue
            raw, code, ts = latest
            quality = status_quality(code)
            value = _value(raw)
            out.append(Reading(p.key, value if quality.is_good else None, quality, ts))
        return out

    async def write(self, point: PointSpec, value: Value) -> None:
        if self._client is None:
            raise DeviceUnavailable("not connected")
        (node,) = await self._resolve([point])
        try:
            variant_type = await node.read_data_type_as_variant_type()
            await node.write_value(ua.DataValue(ua.Variant(value, variant_type)))
        except ua.UaStatusCodeError as err:
            raise DeviceRejected(f"{point.key}: {err}") from err
        except (OSError, TimeoutError, ConnectionError, ua.UaError) as err:
            raise DeviceUnavailable(f"{self._config.url}: {err}") from err

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.disconnect()
            except Exception:  # a dead server cannot be told goodbye
                pass
