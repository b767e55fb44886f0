"""A simulated IEC 60870-5-104 controlled station (c104's server): breakers and feeders.

Information objects, in common address ``common_address`` (default 1), for breaker ``i`` and
feeder ``j`` (both from 0):

=============  ===========  ========================================================
IOA            type         what
=============  ===========  ========================================================
100 + i        M_DP_TB_1    breaker position: 1 open, 2 closed, 0 while travelling
1100 + i       C_DC_NA_1    breaker command (select-before-execute or direct):
                            on = close, off = open; refused in local mode
200 + i        M_SP_TB_1    breaker in local mode (commands refused)
300 + j        M_ME_TF_1    feeder current, A (short float, time-tagged)
320 + j        M_ME_TE_1    feeder voltage, V / 10 (scaled, time-tagged)
340 + j        M_ME_TD_1    feeder power factor (normalised, time-tagged)
400 + j        M_IT_TB_1    feeder energy, kWh (integrated totals)
2000           C_SE_NC_1    a float set-point, echoed into 2001 (M_ME_TF_1)
=============  ===========  ========================================================

Measurements move with seeded noise every ``refresh_s`` and are sent spontaneously when they
change by more than 0.5 % (a station's own deadband). A command moves the breaker after
``travel_s``: the position goes to intermediate (0) at once, then to its end state. Faults for
tests and scenarios: ``set_quality(ioa, ...)`` (IV, NT, SB, BL, OV on one object, sent
spontaneously), ``local_mode(i)``, ``restart()`` (every connection dropped; the station comes
back) and ``slow_s`` (commands answered late).

Time tags are the station's wall clock, as on a real RTU. Built on c104's server, never on
the agent's driver (``drivers/iec104.py``).
"""

# no `from __future__ import annotations`: c104 checks callback signatures by their real types
import random
import threading
import time
from datetime import datetime
from types import TracebackType
from typing import Any, cast

import c104

BREAKER, COMMAND, LOCAL = 100, 1100, 200
CURRENT, VOLTAGE, POWER_FACTOR, ENERGY = 300, 320, 340, 400
SETPOINT, SETPOINT_ECHO = 2000, 2001


class Iec104Station:
    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        common_address: int = 1,
        breakers: int = 2,
        feeders: int = 2,
        seed: int = 1,
        travel_s: float = 0.3,
        refresh_s: float = 0.2,
    ) -> None:
        self.port, self.host, self.common_address = port, host, common_address
        self.travel_s, self.refresh_s, self.slow_s = travel_s, refresh_s, 0.0
        self._rng = random.Random(seed)
        self._server = c104.Server(ip=host, port=port, tick_rate_ms=50, select_timeout_ms=5000)
        self._station: Any = cast(Any, self._server.add_station(common_address=common_address))
        self.closed = [True] * breakers
        self.local = [False] * breakers
        self.commands: list[tuple[int, bool]] = []  # (breaker, close) executed
        self.clock_syncs = 0
        self._amps = [200.0 + 50 * j for j in range(feeders)]
        self._energy = [1000 * (j + 1) for j in range(feeders)]
        self._points: dict[int, Any] = {}  # c104.Point
        for i in range(breakers):
            self._add(BREAKER + i, c104.Type.M_DP_TB_1, c104.Double.ON)
            self._add(LOCAL + i, c104.Type.M_SP_TB_1, False)
            sbo = c104.CommandMode.SELECT_AND_EXECUTE
            cmd: Any = self._station.add_point(io_address=COMMAND + i, type=c104.Type.C_DC_NA_1,
                                          command_mode=sbo)  # fmt: skip
            cmd.on_receive(callable=self._on_command)
        for j in range(feeders):
            self._add(CURRENT + j, c104.Type.M_ME_TF_1, self._amps[j])
            self._add(VOLTAGE + j, c104.Type.M_ME_TE_1, c104.Int16(1150))
            self._add(POWER_FACTOR + j, c104.Type.M_ME_TD_1, c104.NormalizedFloat(0.95))
            self._add(ENERGY + j, c104.Type.M_IT_TB_1, self._energy[j])
        self._add(SETPOINT_ECHO, c104.Type.M_ME_TF_1, 0.0)
        sp = self._station.add_point(io_address=SETPOINT, type=c104.Type.C_SE_NC_1)
        sp.on_receive(callable=self._on_setpoint)
        self._server.on_clock_sync(callable=self._on_clock_sync)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _add(self, ioa: int, kind: c104.Type, value: object) -> None:
        point = self._station.add_point(io_address=ioa, type=kind)
        if value is not None:
            point.value = value
        self._points[ioa] = point

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "Iec104Station":
        self._server.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="iec104-station", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._server.stop()

    def __enter__(self) -> "Iec104Station":
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def restart(self) -> None:
        """Drop every connection, as a station restart does; it listens again at once."""
        self._server.stop()
        self._server.start()

    @property
    def connections(self) -> int:
        return int(self._server.open_connection_count)

    # -- faults ------------------------------------------------------------------------------
    def set_quality(self, ioa: int, *flags: str) -> None:
        """Send object ``ioa`` spontaneously with the quality flags named (e.g. "Invalid",
        "NonTopical", "Substituted", "Blocked", "Overflow"); none: good again."""
        q = c104.Quality()
        for flag in flags:
            q = q | getattr(c104.Quality, flag)
        point = self._points[ioa]
        point.quality = q
        self._send(point)

    def local_mode(self, breaker: int, on: bool = True) -> None:
        self.local[breaker] = on
        self._points[LOCAL + breaker].value = on
        self._send(self._points[LOCAL + breaker])

    # -- behaviour ---------------------------------------------------------------------------
    def _send(self, point: c104.Point) -> None:
        point.transmit(cause=c104.Cot.SPONTANEOUS)  # time tag: when its value was set

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            for j, amps in enumerate(self._amps):
                new = max(0.0, amps * (1 + self._rng.gauss(0, 0.004)) + self._rng.gauss(0, 0.5))
                point = self._points[CURRENT + j]
                self._amps[j] = new
                old = float(point.value)
                if abs(new - old) > 0.005 * max(abs(old), 1.0):
                    point.value = new
                    self._send(point)
                self._energy[j] += 1
                self._points[ENERGY + j].value = self._energy[j]

    def _on_command(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        i = point.io_address - COMMAND
        if self.slow_s:
            time.sleep(self.slow_s)
        if self.local[i]:
            return c104.ResponseState.FAILURE  # negative confirmation: in local mode
        if message.is_select_command:
            return c104.ResponseState.SUCCESS
        close = point.value == c104.Double.ON
        self.commands.append((i, close))
        threading.Thread(target=self._travel, args=(i, close), daemon=True).start()
        return c104.ResponseState.SUCCESS

    def _travel(self, i: int, close: bool) -> None:
        position = self._points[BREAKER + i]
        if self.closed[i] == close:
            self._send(position)  # already there: the position is confirmed as it is
            return
        position.value = c104.Double.INTERMEDIATE
        self._send(position)
        time.sleep(self.travel_s)
        self.closed[i] = close
        position.value = c104.Double.ON if close else c104.Double.OFF
        self._send(position)

    def _on_setpoint(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        echo = self._points[SETPOINT_ECHO]
        echo.value = float(point.value)  # type: ignore[arg-type]
        self._send(echo)
        return c104.ResponseState.SUCCESS

    def _on_clock_sync(
        self, server: c104.Server, ip: str, date_time: datetime
    ) -> c104.ResponseState:
        self.clock_syncs += 1
        return c104.ResponseState.SUCCESS
