"""The ledger collector the edge fault tests run inside the agent process, and its own test.

Kept apart from test_edge_faults.py so the agent process imports only this light module.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from collectors.base import Collector, ReadingSink
from qilu.contract import Reading


class LedgerCollector(Collector):
    """Deterministic readings at ``rate``/s; appends the last acknowledged index to ``ledger``.

    Resumes after the last ledger entry, so a restarted agent regenerates what was handed
    over but not yet recorded (same keys: the database stores them once)."""

    type_name = "ledger"

    def __init__(self, name: str, raw: Mapping[str, Any]) -> None:
        super().__init__(name)
        self.devices: list[str] = list(raw["devices"])
        self.rate = float(raw["rate"])
        self.total = int(raw["total"])
        self.t0_us = int(raw["t0_us"])
        self.ledger = Path(raw["ledger"])

    @classmethod
    def from_config(cls, name: str, raw: Mapping[str, Any]) -> LedgerCollector:
        return cls(name, raw)

    def validate(self) -> None:
        pass

    def reading(self, i: int) -> Reading:
        return Reading(
            self.devices[i % len(self.devices)], "power_kw", self.t0_us + i * 1000, float(i % 1000)
        )

    async def collect(self, sink: ReadingSink) -> None:
        start = last_acked(self.ledger) + 1
        fd = os.open(self.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            began, i = time.monotonic(), start
            while i < self.total:
                due = start + int((time.monotonic() - began) * self.rate)
                hi = min(max(due, i + 1), self.total, i + 2000)
                await sink([self.reading(j) for j in range(i, hi)])
                os.write(fd, f"{hi - 1}\n".encode())
                i = hi
                await asyncio.sleep(0.02)
        finally:
            os.close(fd)
        await asyncio.Event().wait()


def last_acked(ledger: Path) -> int:
    try:
        lines = ledger.read_text().split()
    except FileNotFoundError:
        return -1
    return int(lines[-1]) if lines else -1


def test_ledger_collector_resumes_after_its_last_acknowledged_reading(tmp_path: Path) -> None:
    raw = {
        "devices": ["a", "b"],
        "rate": 1e6,
        "total": 10,
        "t0_us": 0,
        "ledger": str(tmp_path / "ledger"),
    }
    (tmp_path / "ledger").write_text("3\n")
    got: list[Reading] = []

    async def sink(rs: Sequence[Reading]) -> None:
        got.extend(rs)

    async def main() -> None:
        task = asyncio.create_task(LedgerCollector("l", raw).collect(sink))
        while last_acked(tmp_path / "ledger") < 9:  # noqa: ASYNC110 - polls a file
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(main())
    assert [r.ts_us for r in got] == [i * 1000 for i in range(4, 10)]
    assert [r.device_id for r in got[:2]] == ["a", "b"]
