"""Which connector (EVSE) each charging transaction runs on. Pure: no I/O, no clock.

OCPP names a connector only in some of a transaction's messages:

- 1.6: StartTransaction carries the connector and the CSMS hands out the transaction id;
  StopTransaction carries only the id (its ``transactionData`` meter values need the
  connector from the start); MeterValues carries both.
- 2.0.1: the ``evse`` field of TransactionEvent is required only in the first event of a
  transaction after the EV connected (usually Started); Updated and Ended events may omit it.

:class:`Transactions` remembers, per charge point, the connector of each transaction it has
seen with one. An EVSE runs one transaction at a time, so a transaction seen on a connector
replaces any older one there: the map holds at most one transaction per connector, ended
ones included (a station that did not get the answer to its Ended event sends it again and
it is still placed). The map is the same across connections of a charge point, and
:meth:`Transactions.dumps` / :meth:`Transactions.loads` carry it over an agent restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FORMAT = 1
MAX_ID = 2**31 - 1  # many charge points keep the 1.6 transaction id in a 32-bit integer


@dataclass(slots=True)
class Transactions:
    """charge point id -> transaction id -> connector (EVSE) id; plus the last 1.6 id issued."""

    open: dict[str, dict[str, int]] = field(default_factory=dict)
    last_id: int = 0

    def place(self, cp_id: str, tx_id: str, connector: int | None) -> tuple[int | None, bool]:
        """The connector of a transaction message: ``connector`` when the message names one
        (remembered for the transaction), else the one remembered, else None.

        Returns (connector, whether the map changed)."""
        if connector is None or connector <= 0:
            if not tx_id:
                return connector, False
            return self.open.get(cp_id, {}).get(tx_id, connector), False
        if not tx_id:
            return connector, False
        txs = self.open.setdefault(cp_id, {})
        if txs.get(tx_id) == connector:
            return connector, False
        for other in [t for t, c in txs.items() if c == connector]:
            del txs[other]  # that connector's previous transaction is over
        txs[tx_id] = connector
        return connector, True

    def new_id(self, now_s: int) -> int:
        """A transaction id for a 1.6 StartTransaction, unique per agent.

        The ids follow the clock (Unix seconds) and are at least one more than the last one
        issued, so they keep increasing across restarts even when the last id was not kept,
        as long as fewer than one transaction a second starts on average."""
        n = max(self.last_id + 1, now_s)
        self.last_id = n if n <= MAX_ID else 1
        return self.last_id

    def dumps(self) -> str:
        return json.dumps(
            {"format": FORMAT, "last_id": self.last_id, "open": self.open},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, text: str) -> Transactions:
        """The map :meth:`dumps` wrote; ValueError when the text is not one."""
        raw: Any = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"not a transaction map of format {FORMAT}")
        last_id, open_ = raw.get("last_id"), raw.get("open")
        if not isinstance(last_id, int) or not isinstance(open_, dict):
            # bad content of a file, not a caller's wrong argument: ValueError, as json's
            raise ValueError("last_id must be an integer and open a table")  # noqa: TRY004
        out = cls(last_id=last_id)
        for cp_id, txs in open_.items():
            if not isinstance(txs, dict) or not all(
                isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in txs.values()
            ):
                raise ValueError(f"charge point {cp_id!r}: connectors must be integers > 0")
            out.open[str(cp_id)] = {str(t): int(c) for t, c in txs.items()}
        return out
