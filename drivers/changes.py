"""Which configured points were reported since they were last read: the ``reports_changes``
half of the driver contract (``drivers.base``), shared by the event-driven drivers.

A driver marks a point's address when a report arrives (``mark``); ``select`` picks what a read
returns: every point at the first read after ``reset`` (a connect), a point asked for alone
always, otherwise the points marked since the last read. No locking: a driver whose reports
arrive on another thread calls both under its own lock.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from edgetwin.core.points import PointSpec


class Changes:
    def __init__(
        self, points: Sequence[PointSpec], address: Callable[[PointSpec], Hashable]
    ) -> None:
        self._address = address
        self._specs: dict[Hashable, list[PointSpec]] = {}
        for spec in points:
            self._specs.setdefault(address(spec), []).append(spec)
        #: the configured addresses
        self.addresses: frozenset[Hashable] = frozenset(self._specs)
        self._dirty: set[Hashable] = set()
        self._full = True

    def mark(self, address: Hashable) -> None:
        if address in self._specs:
            self._dirty.add(address)

    def reset(self) -> None:
        """After a connect: the next read returns every point."""
        self._full = True

    def select(self, points: Sequence[PointSpec]) -> Sequence[PointSpec]:
        if self._full or len(points) == 1:
            if self._full:
                self._full = False
                self._dirty.clear()
            else:
                self._dirty.discard(self._address(points[0]))
            return points
        dirty, self._dirty = self._dirty, set()
        asked = {spec.key for spec in points}
        return [s for address in dirty for s in self._specs.get(address, ()) if s.key in asked]
