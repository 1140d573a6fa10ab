"""Batching without I/O: readings in, envelopes out, with the agent's sequence numbers.

An envelope closes when it holds ``max_readings`` readings or when its oldest reading has
waited ``max_delay_us``. Envelopes are per sector because each sector has its own topic.
The sequence number increases by one per closed envelope, across sectors, within one boot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from qilu.contract import Envelope, Reading, Sector


class Batcher:
    def __init__(
        self,
        agent_id: str,
        boot_id: str,
        *,
        max_readings: int = 500,
        max_delay_us: int = 1_000_000,
        next_seq: int = 0,
    ) -> None:
        if max_readings < 1:
            raise ValueError("max_readings must be at least 1")
        self.agent_id, self.boot_id = agent_id, boot_id
        self._max, self._delay = max_readings, max_delay_us
        self._seq = next_seq
        self._open: dict[Sector, tuple[int, Envelope]] = {}  # sector -> (opened at, envelope)

    @property
    def next_seq(self) -> int:
        return self._seq

    def pending(self) -> int:
        return sum(len(env) for _, env in self._open.values())

    def add(
        self, sector: Sector, readings: Sequence[Reading], now_us: int
    ) -> list[tuple[Sector, Envelope]]:
        """Add readings of one sector; returns the envelopes that filled up."""
        closed: list[tuple[Sector, Envelope]] = []
        i = 0
        while i < len(readings):
            opened, env = self._open.get(sector) or (now_us, self._new(now_us))
            take = readings[i : i + self._max - len(env)]
            env.extend(take)
            i += len(take)
            if len(env) >= self._max:
                closed.append((sector, self._close(env, now_us)))
                self._open.pop(sector, None)
            else:
                self._open[sector] = (opened, env)
        return closed

    def due(self, now_us: int, *, force: bool = False) -> list[tuple[Sector, Envelope]]:
        """Envelopes whose oldest reading has waited long enough (all of them if ``force``)."""
        out = []
        for sector, (opened, env) in list(self._open.items()):
            if force or now_us - opened >= self._delay:
                out.append((sector, self._close(env, now_us)))
                del self._open[sector]
        return out

    def _new(self, now_us: int) -> Envelope:
        return Envelope(self.agent_id, self.boot_id, -1, now_us)

    def _close(self, env: Envelope, now_us: int) -> Envelope:
        env.seq = self._seq
        env.sent_at_us = now_us
        self._seq += 1
        return env


def split_by_sector(
    readings: Iterable[Reading], sector_of: dict[str, Sector], default: Sector
) -> dict[Sector, list[Reading]]:
    out: dict[Sector, list[Reading]] = {}
    for r in readings:
        out.setdefault(sector_of.get(r.device_id, default), []).append(r)
    return out
