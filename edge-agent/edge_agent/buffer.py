"""The durable store-and-forward buffer: SQLite in WAL mode (decision: docs/adr/0003).

Synchronous and single-threaded on purpose: the agent calls it from one dedicated thread.

Tables::

    chunk   readings handed over by collectors, not yet in an envelope (see edge_agent.chunks)
    outbox  envelopes formed from chunks (or gap records), with their (boot id, sequence),
            kept byte for byte until the broker acknowledged them; a restart sends them again
            unchanged, so the backend can recognise the duplicates. ``refused`` (the
            quarantine): the broker refused the envelope for good (the agent is not
            authorised for its topic); it stays here, counted, and is not sent again until
            :func:`requeue_quarantine` clears the mark (after the agent's rights changed);
            it holds at most ``quarantine_max_share`` of ``max_bytes``
    boot    one row per agent start: boot number, boot id, start time
    meta    agent id, and ``pending`` (readings in chunk + outbox) used to count what a
            corrupted file lost

Guarantees:

- :meth:`Buffer.add` returns only after its transaction committed (fsync per commit with
  ``fsync="batch"``; with ``"os"`` the OS flushes: safe against ``kill -9``, not power loss).
  Forming envelopes and acknowledgements commit without an fsync of their own: the next
  hand-over's fsync covers them, and losing them to a power cut only causes a resend.
- Bounded on disk: database + WAL stay under ``max_bytes``. When the next hand-over does not
  fit, the ``policy`` applies: ``drop_oldest`` evicts the oldest normal chunks first and alarm
  chunks only when nothing else is left; ``drop_newest`` refuses new normal readings (alarms
  still evict the oldest normal chunks). Chunks older than ``max_age_s`` are dropped too. Every
  dropped reading is counted and described by a gap record that goes upstream like an envelope.
- A reading leaves only when its envelope was acknowledged (:meth:`Buffer.ack`); a refused
  envelope stays in the quarantine (it counts against ``max_bytes``). The quarantine is capped
  at ``quarantine_max_share`` of ``max_bytes`` (payload bytes): past the cap the oldest
  quarantined envelopes with readings are evicted, counted (``quarantine_full``) and described
  by a gap record in their sector, so a sector the broker keeps refusing can never fill the
  buffer and make the eviction delete the authorised sectors' fresh readings.
- At open, a file that fails ``PRAGMA quick_check`` (or is not a database) is moved to a
  quarantine folder beside it; every readable chunk and envelope is copied into a fresh file,
  the unreadable rest is counted (exactly, when the ``meta`` row survived) and reported as a
  ``corrupt_buffer`` gap.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_agent.chunks import (
    NORMAL,
    SECTOR_INDEX,
    SECTORS,
    Chunk,
    Span,
    chunk_is_intact,
    encoded_envelope_of,
    gaps_of,
    spans_of,
    summarise,
)
from qilu.contract import Envelope, Gap, Sector, decode
from qilu.errors import ConfigError, DecodeError

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS boot (
    boot_no INTEGER PRIMARY KEY AUTOINCREMENT, boot_id TEXT NOT NULL, started_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunk (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sector INTEGER NOT NULL, prio INTEGER NOT NULL, n INTEGER NOT NULL, bytes INTEGER NOT NULL,
    added_us INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunk_evict ON chunk (prio, id);
CREATE INDEX IF NOT EXISTS chunk_added ON chunk (added_us);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sector INTEGER NOT NULL, boot_id TEXT NOT NULL, seq INTEGER NOT NULL, n INTEGER NOT NULL,
    gaps INTEGER NOT NULL, added_us INTEGER NOT NULL, bytes INTEGER NOT NULL,
    payload BLOB NOT NULL, refused TEXT, refused_us INTEGER
);
"""
# buffer files written before the quarantine existed get its two columns at open
_OUTBOX_COLUMNS_ADDED = (("refused", "TEXT"), ("refused_us", "INTEGER"))
ROW_OVERHEAD = 48  # bytes of a chunk row besides its blob (header, keys, index entries)
Policy = Literal["drop_oldest", "drop_newest"]
Fsync = Literal["batch", "os"]


def wall_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An envelope in the outbox: sent byte for byte until acknowledged."""

    id: int
    sector: Sector
    boot_id: str
    seq: int
    readings: int
    gaps: int
    added_us: int
    payload: bytes


@dataclass(slots=True)
class AddResult:
    accepted: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> readings

    def drop(self, reason: str, n: int) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + n


@dataclass(frozen=True, slots=True)
class OpenReport:
    boot_no: int
    boot_id: str
    pending: int  # readings waiting (chunks and unacknowledged envelopes)
    outbox: int  # envelopes of earlier boots waiting for their acknowledgement
    quarantined: Path | None = None
    salvaged: int = 0  # readings copied from a damaged file
    lost: int | None = 0  # readings lost to damage (None: unknown, the count itself was lost)
    lost_rows: int = 0  # unreadable rows


@dataclass(frozen=True, slots=True)
class Quarantined:
    """Refused envelopes of one sector waiting in the quarantine."""

    sector: Sector
    envelopes: int
    readings: int
    reason: str


@dataclass(frozen=True, slots=True)
class Stats:
    readings: int
    payload_bytes: int
    disk_bytes: int
    oldest_added_us: int | None
    outbox: int


class Buffer:
    def __init__(
        self,
        path: str | Path,
        agent_id: str,
        *,
        max_bytes: int,
        max_age_s: float,
        policy: Policy = "drop_oldest",
        fsync: Fsync = "batch",
        clock: Callable[[], int] = wall_us,
        checkpoint_bytes: int | None = None,
        quarantine_max_share: float = 0.25,
    ) -> None:
        """``checkpoint_bytes``: WAL size that triggers a checkpoint (default: about 1/32 of
        ``max_bytes``, 256 KB to 4 MB); many small buffers on one disk (province mode) want a
        small WAL each. ``quarantine_max_share``: the share of ``max_bytes`` refused envelopes
        may hold (payload bytes); past it the oldest are evicted (``quarantine_full``)."""
        self.path = Path(path)
        self.agent_id = agent_id
        self.max_bytes = max_bytes
        self.quarantine_max_bytes = int(max_bytes * quarantine_max_share)
        self.max_age_us = int(max_age_s * 1_000_000)
        self.policy, self.fsync = policy, fsync
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self.boot_id = ""
        self.boot_no = 0
        self._seq = 0
        self._gap_no = 0
        self._pending = 0
        self._payload = 0
        # readings in chunks (not yet in an envelope) and when the oldest was handed over:
        # kept in memory so the sender can tell whether an envelope is due without a query
        self._chunk_n = 0
        self._chunk_oldest_us: int | None = None
        self._page = 4096
        # disk bound: the WAL may hold one checkpoint interval plus one large transaction
        # a WAL checkpoint every ~1/32 of the bound (64..1024 pages): rarer checkpoints copy
        # each hot page (meta, newest leaves) fewer times. The WAL may grow to about twice
        # that between checkpoints, plus one transaction: that much of the bound is reserved.
        self._checkpoint_pages = max(
            16, (checkpoint_bytes or max(64 * 4096, min(1024 * 4096, max_bytes // 32))) // 4096
        )
        self._wal_reserve = min(max_bytes // 4, 4 * self._checkpoint_pages * 4096)
        self._limit = 0  # data pages bound, set at open
        self._seen_used = self._seen_payload = 0  # the last exact page count, and _payload then

    # ------------------------------------------------------------------ open / close

    def open(self, *, boot_id: str | None = None) -> OpenReport:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        quarantined: Path | None = None
        salvage: _Salvage | None = None
        if self.path.exists():
            problem = _check(self.path)
            if problem:
                quarantined = self._quarantine(problem)
                salvage = _salvage(quarantined / self.path.name)
        db = self._connect()
        self._db = db
        owner = db.execute("SELECT value FROM meta WHERE key = 'agent_id'").fetchone()
        if owner and owner[0] != self.agent_id:
            db.close()
            self._db = None
            raise ConfigError(
                "agent.id",
                f"the buffer {self.path} belongs to agent {owner[0]!r}, not {self.agent_id!r}: "
                "give each agent its own buffer.path",
            )
        self.boot_id = boot_id or uuid.uuid4().hex
        now = self._clock()
        with self._tx():
            db.execute("INSERT OR IGNORE INTO meta VALUES ('agent_id', ?)", (self.agent_id,))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('pending', 0)")
            cur = db.execute(
                "INSERT INTO boot (boot_id, started_us) VALUES (?, ?)", (self.boot_id, now)
            )
            self.boot_no = int(cur.lastrowid or 0)
            if salvage is not None:
                self._restore(salvage)
        self._page = int(db.execute("PRAGMA page_size").fetchone()[0])
        self._limit = self.max_bytes - self._wal_reserve
        self._recount()
        self._used_bytes()
        lost: int | None = 0
        if salvage is not None:
            lost = salvage.lost()
            with self._tx():
                # the time span of what was lost is unknown: the gap is stamped with now
                self._gap_envelopes(
                    {Sector.CHARGING: []},
                    "corrupt_buffer" if lost is not None else "corrupt_buffer_count_unknown",
                    extra=[(None, now, now, lost or 0)],
                )
            logger.error(
                "buffer %s was damaged (%s): moved to %s; kept %d readings, lost %s "
                "readings in %d unreadable rows",
                self.path, salvage.problem, quarantined, salvage.readings,
                "an unknown number of" if lost is None else lost, salvage.bad_rows,
            )  # fmt: skip
        outbox = int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        return OpenReport(
            self.boot_no,
            self.boot_id,
            self._pending,
            outbox,
            quarantined,
            salvage.readings if salvage else 0,
            lost,
            salvage.bad_rows if salvage else 0,
        )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self.fsync == 'batch' else 'NORMAL'}")
        db.execute(f"PRAGMA wal_autocheckpoint={self._checkpoint_pages}")
        db.execute(f"PRAGMA journal_size_limit={self._checkpoint_pages * 4096}")
        db.execute("PRAGMA cache_size=-512")  # 512 KB page cache: RSS matters on a Pi
        db.executescript(SCHEMA)
        _add_quarantine_columns(db)
        return db

    def _quarantine(self, problem: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        folder = self.path.with_name(f"{self.path.name}.quarantine-{stamp}-{uuid.uuid4().hex[:6]}")
        folder.mkdir()
        for suffix in ("", "-wal", "-shm"):
            src = self.path.with_name(self.path.name + suffix)
            if src.exists():
                src.rename(folder / src.name)
        (folder / "REASON").write_text(problem + "\n")
        return folder

    def _restore(self, s: _Salvage) -> None:
        db = self.db
        db.executemany(
            "INSERT INTO chunk (sector, prio, n, bytes, added_us, data) VALUES (?,?,?,?,?,?)",
            s.chunks,
        )
        db.executemany(
            "INSERT INTO outbox (sector, boot_id, seq, n, gaps, added_us, bytes, payload)"
            " VALUES (?,?,?,?,?,?,?,?)",
            s.outbox,
        )

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
                self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("buffer is not open")
        return self._db

    def _tx(self, *, relaxed: bool = False) -> _Tx:
        """A transaction; ``relaxed``: without an fsync of its own (``fsync="batch"``), for
        changes whose loss to a power cut only means sending something again (forming an
        envelope, an acknowledgement): the next hand-over's commit syncs them too."""
        return _Tx(self.db, relax=relaxed and self.fsync == "batch")

    def _recount(self) -> None:
        db = self.db
        c = db.execute("SELECT coalesce(sum(n), 0), coalesce(sum(bytes), 0) FROM chunk").fetchone()
        o = db.execute("SELECT coalesce(sum(n), 0), coalesce(sum(bytes), 0) FROM outbox").fetchone()
        self._pending = int(c[0]) + int(o[0])
        self._payload = int(c[1]) + int(o[1])
        self._chunk_n = int(c[0])
        self._refresh_oldest()
        with self._tx():
            self._set_pending()

    def _refresh_oldest(self) -> None:
        row = self.db.execute("SELECT min(added_us) FROM chunk").fetchone()
        self._chunk_oldest_us = None if row[0] is None else int(row[0])

    def due(self, now_us: int, max_readings: int, max_delay_us: int) -> bool:
        """Could :meth:`form` produce an envelope now? In memory only: safe from any thread."""
        oldest = self._chunk_oldest_us
        return self._chunk_n >= max_readings or (
            oldest is not None and now_us - oldest >= max_delay_us
        )

    @property
    def chunk_readings(self) -> int:
        return self._chunk_n

    @property
    def oldest_chunk_us(self) -> int | None:
        return self._chunk_oldest_us

    def _set_pending(self) -> None:
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'pending'", (self._pending,))

    # ------------------------------------------------------------------ intake

    def _used_bytes(self) -> int:
        db = self.db
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        used = (pages - free) * self._page
        self._seen_used, self._seen_payload = used, self._payload
        return used

    def _surely_fits(self, incoming: int) -> bool:
        """True when, by a pessimistic estimate (pages grow at most twice as fast as the
        payload since the last exact count), the data stay under half the bound: then the
        hand-over needs no page count (two statements less per commit)."""
        grown = max(0, self._payload - self._seen_payload)
        return self._seen_used + 2 * (grown + incoming) < self._limit // 2

    def add(self, chunks: Sequence[Chunk]) -> AddResult:
        """Store hand-overs durably (one transaction), applying the bounds first."""
        res = AddResult()
        if not chunks:
            return res
        now = self._clock()
        rows = [
            (SECTOR_INDEX[c.sector], c.prio, len(c.readings), blob, len(blob) + ROW_OVERHEAD)
            for c in chunks
            for blob in (c.encode(),)
        ]
        incoming = sum(r[4] for r in rows)
        with self._tx():  # the age bound is applied by expire(), called periodically
            need = (
                0
                if self._surely_fits(incoming)
                else self._used_bytes() + 2 * incoming - self._limit
            )
            if need > 0:
                if self.policy == "drop_newest":
                    kept = []
                    for r in rows:
                        if r[1] == NORMAL:
                            self._gaps_for_refused(r, res)
                        else:
                            kept.append(r)
                    rows = kept
                    need = self._used_bytes() + 2 * sum(r[4] for r in rows) - self._limit
                if need > 0 and rows:
                    # evict a little more than needed so the next hand-overs fit without evicting
                    self._evict(need + self._limit // 100, res, now)
            db = self.db
            db.executemany(
                "INSERT INTO chunk (sector, prio, n, bytes, added_us, data) VALUES (?,?,?,?,?,?)",
                [(s, p, n, b, now, blob) for s, p, n, blob, b in rows],
            )
            res.accepted = sum(r[2] for r in rows)
            self._pending += res.accepted
            self._payload += sum(r[4] for r in rows)
            self._set_pending()
        self._chunk_n += res.accepted
        if res.dropped:
            self._refresh_oldest()
        elif self._chunk_oldest_us is None and res.accepted:
            self._chunk_oldest_us = now
        return res

    def _gaps_for_refused(self, row: tuple[int, int, int, bytes, int], res: AddResult) -> None:
        sector = SECTORS[row[0]]
        res.drop("buffer_full", row[2])
        self._gap_envelopes({sector: [row[3]]}, "buffer_full")

    def _evict(self, need: int, res: AddResult, now: int) -> None:
        """Drop chunks in eviction order (normal before alarm, oldest first) until ``need``
        bytes of pages are free."""
        db = self.db
        target = self._used_bytes() - need
        dropped: dict[Sector, list[bytes]] = {}
        while self._used_bytes() > target:
            rows = db.execute(
                "SELECT id, sector, n, bytes, data FROM chunk ORDER BY prio, id LIMIT 8"
            ).fetchall()
            if not rows:
                break
            self._drop_rows(rows, dropped, res, "buffer_full")
        self._gap_envelopes(dropped, "buffer_full")
        del now

    def _drop_rows(
        self,
        rows: Sequence[tuple[int, int, int, int, bytes]],
        dropped: dict[Sector, list[bytes]],
        res: AddResult,
        reason: str,
    ) -> None:
        self.db.executemany("DELETE FROM chunk WHERE id = ?", [(r[0],) for r in rows])
        for _, sector, n, nbytes, data in rows:
            dropped.setdefault(SECTORS[sector], []).append(data)
            res.drop(reason, n)
            self._pending -= n
            self._chunk_n -= n
            self._payload -= nbytes

    def _expire(self, now: int, res: AddResult) -> None:
        cutoff = now - self.max_age_us
        rows = self.db.execute(
            "SELECT id, sector, n, bytes, data FROM chunk WHERE added_us < ?", (cutoff,)
        ).fetchall()
        if rows:
            dropped: dict[Sector, list[bytes]] = {}
            self._drop_rows(rows, dropped, res, "max_age")
            self._gap_envelopes(dropped, "max_age")

    def expire(self) -> AddResult:
        """Apply the age bound now (the agent calls this periodically)."""
        res = AddResult()
        with self._tx():
            self._expire(self._clock(), res)
            self._set_pending()
        if res.dropped:
            self._refresh_oldest()
        return res

    def _gap_envelopes(
        self,
        dropped: dict[Sector, list[bytes]],
        reason: str,
        extra: Iterable[tuple[str | None, int, int, int]] = (),
    ) -> None:
        """One gap envelope per sector into the outbox, in the current transaction."""
        self._gap_spans({s: summarise(b)[1] for s, b in dropped.items()}, reason, extra)

    def _gap_spans(
        self,
        dropped: dict[Sector, dict[str, Span]],
        reason: str,
        extra: Iterable[tuple[str | None, int, int, int]] = (),
    ) -> None:
        now = self._clock()
        more = list(extra)
        for sector, spans in dropped.items():
            gaps = gaps_of(self.boot_id, self._gap_no, spans, reason)
            gaps += [
                Gap(self.boot_id, self._gap_no + len(gaps) + i, d, s, e, c, reason)
                for i, (d, s, e, c) in enumerate(more)
            ]
            more = []
            if not gaps:
                continue
            self._gap_no += len(gaps)
            env = Envelope(self.agent_id, self.boot_id, self._next_seq(), now, gaps=gaps)
            self._insert_outbox(sector, env, now)

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _insert_outbox(self, sector: Sector, env: Envelope, added_us: int) -> tuple[int, bytes]:
        payload = env.encode()
        oid = self._insert_payload(
            sector, env.boot_id, env.seq, len(env), len(env.gaps), added_us, payload
        )
        return oid, payload

    def _insert_payload(
        self,
        sector: Sector,
        boot_id: str,
        seq: int,
        n: int,
        gaps: int,
        added_us: int,
        payload: bytes,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO outbox (sector, boot_id, seq, n, gaps, added_us, bytes, payload)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (
                SECTOR_INDEX[sector],
                boot_id,
                seq,
                n,
                gaps,
                added_us,
                len(payload) + ROW_OVERHEAD,
                payload,
            ),
        )
        self._payload += len(payload) + ROW_OVERHEAD
        return int(cur.lastrowid or 0)

    # ------------------------------------------------------------------ delivery

    def unsent_outbox(self, exclude: Iterable[int] = ()) -> list[Outgoing]:
        """Envelopes formed earlier (this boot or before), not acknowledged, not refused."""
        skip = set(exclude)
        rows = self.db.execute(
            "SELECT id, sector, boot_id, seq, n, gaps, added_us, payload FROM outbox"
            " WHERE refused IS NULL ORDER BY id"
        ).fetchall()
        return [
            Outgoing(i, SECTORS[s], b, q, n, g, a, p)
            for i, s, b, q, n, g, a, p in rows
            if i not in skip
        ]

    def form(
        self,
        *,
        live: bool,
        now_us: int,
        live_window_us: int,
        max_readings: int,
        max_delay_us: int,
        force: bool = False,
    ) -> Outgoing | None:
        """Move the next envelope's chunks into the outbox with a new sequence number.

        ``live``: chunks handed over within ``live_window_us``, formed when ``max_readings``
        are waiting in one sector or the oldest waited ``max_delay_us`` (or ``force``).
        Otherwise the backlog: older chunks, oldest first, always due.
        """
        db = self.db
        cutoff = now_us - live_window_us
        cond = "added_us >= ?" if live else "added_us < ?"
        rows = db.execute(
            f"SELECT id, sector, n, added_us FROM chunk WHERE {cond} ORDER BY id LIMIT 512",  # noqa: S608 - fixed text
            (cutoff,),
        ).fetchall()
        if not rows:
            return None
        sector = rows[0][1]
        picked: list[int] = []
        total = 0
        oldest = rows[0][3]
        for cid, sec, n, added in rows:
            if sec != sector:
                continue
            if picked and total + n > max_readings:
                break
            picked.append(cid)
            total += n
            oldest = min(oldest, added)
        if live and not force and total < max_readings and now_us - oldest < max_delay_us:
            return None
        marks = ",".join("?" * len(picked))
        blobs = db.execute(
            f"SELECT data, bytes FROM chunk WHERE id IN ({marks}) ORDER BY id",  # noqa: S608 - placeholders only
            picked,
        ).fetchall()
        with self._tx(relaxed=True):  # lost to a power cut: the chunks form a new envelope
            seq = self._next_seq()
            # the chunks' packed columns concatenated: no reading decoded and encoded again
            payload, n = encoded_envelope_of(
                self.agent_id, self.boot_id, seq, now_us, [b[0] for b in blobs]
            )
            db.execute(f"DELETE FROM chunk WHERE id IN ({marks})", picked)  # noqa: S608
            self._payload -= sum(b[1] for b in blobs)
            oid = self._insert_payload(SECTORS[sector], self.boot_id, seq, n, 0, oldest, payload)
        self._chunk_n -= n
        self._refresh_oldest()
        return Outgoing(oid, SECTORS[sector], self.boot_id, seq, n, 0, oldest, payload)

    def ack(self, outgoing: Sequence[Outgoing]) -> None:
        """The broker acknowledged these envelopes: their readings leave the buffer.

        Committed without an fsync of its own even with ``fsync="batch"``: the next durable
        commit (the next hand-over) syncs the log up to and including it. An acknowledgement
        lost to a power cut before then only means the envelope is sent again, byte for
        byte, and the backend drops the duplicate; no reading can be lost that way."""
        if not outgoing:
            return
        with self._tx(relaxed=True):
            self.db.executemany("DELETE FROM outbox WHERE id = ?", [(o.id,) for o in outgoing])
            self._pending -= sum(o.readings for o in outgoing)
            self._payload -= sum(len(o.payload) + ROW_OVERHEAD for o in outgoing)
            self._set_pending()

    def refuse(self, outgoing: Sequence[Outgoing], reason: str) -> AddResult:
        """The broker refused these envelopes for good (not authorised for their topic):
        they move to the quarantine, byte for byte, and are not sent again until
        :func:`requeue_quarantine`. Their readings stay counted as pending, unless the
        quarantine outgrew its share of the bound: then its oldest envelopes with readings
        are evicted (a gap record ``quarantine_full`` in their sector); the result counts
        them."""
        res = AddResult()
        if not outgoing:
            return res
        with self._tx():
            self.db.executemany(
                "UPDATE outbox SET refused = ?, refused_us = ? WHERE id = ?",
                [(reason, self._clock(), o.id) for o in outgoing],
            )
            self._cap_quarantine(res)
            if res.dropped:
                self._set_pending()
        return res

    def _cap_quarantine(self, res: AddResult) -> None:
        """Evict the oldest quarantined envelopes with readings until the quarantine holds at
        most 90 % of its cap (so the next refusals do not each evict)."""
        db = self.db
        held = int(
            db.execute(
                "SELECT coalesce(sum(bytes), 0) FROM outbox WHERE refused IS NOT NULL"
            ).fetchone()[0]
        )
        cap = self.quarantine_max_bytes
        if held <= cap:
            return
        target = cap - cap // 10
        picked: list[int] = []
        for oid, nbytes in db.execute(
            "SELECT id, bytes FROM outbox WHERE refused IS NOT NULL AND n > 0 ORDER BY id"
        ).fetchall():
            if held <= target:
                break
            picked.append(int(oid))
            held -= int(nbytes)
        columns: dict[Sector, list[tuple[list[str], list[int]]]] = {}
        for lo in range(0, len(picked), 256):
            ids = picked[lo : lo + 256]
            marks = ",".join("?" * len(ids))
            rows = db.execute(
                f"SELECT sector, n, bytes, payload FROM outbox WHERE id IN ({marks})",  # noqa: S608 - placeholders only
                ids,
            ).fetchall()
            db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", ids)  # noqa: S608
            for sector, n, nbytes, payload in rows:
                env = decode(payload)
                columns.setdefault(SECTORS[sector], []).append((env.devices, env.ts_us))
                res.drop("quarantine_full", int(n))
                self._pending -= int(n)
                self._payload -= int(nbytes)
        # the gap records go to the same sector's topic (refused too, so quarantined as well:
        # they reach the platform with the rest once the agent's rights are fixed)
        self._gap_spans({s: spans_of(c)[1] for s, c in columns.items()}, "quarantine_full")

    def quarantine(self) -> list[Quarantined]:
        """What waits in the quarantine, per sector."""
        return _quarantine_of(self.db)

    # ------------------------------------------------------------------ state

    def stats(self) -> Stats:
        db = self.db
        a = db.execute("SELECT min(added_us) FROM chunk").fetchone()[0]
        b = db.execute(
            "SELECT min(added_us) FROM outbox WHERE n > 0 AND refused IS NULL"
        ).fetchone()[0]
        oldest = min((x for x in (a, b) if x is not None), default=None)
        outbox = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        return Stats(self._pending, self._payload, self.disk_bytes(), oldest, outbox)

    def disk_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += self.path.with_name(self.path.name + suffix).stat().st_size
            except FileNotFoundError:
                continue
        return total

    @property
    def pending(self) -> int:
        return self._pending

    def backlog_readings(self, now_us: int, live_window_us: int) -> int:
        row = self.db.execute(
            "SELECT coalesce(sum(n), 0) FROM chunk WHERE added_us < ?", (now_us - live_window_us,)
        ).fetchone()
        return int(row[0])

    def live_readings(self, now_us: int, live_window_us: int) -> int:
        row = self.db.execute(
            "SELECT coalesce(sum(n), 0) FROM chunk WHERE added_us >= ?",
            (now_us - live_window_us,),
        ).fetchone()
        return int(row[0])


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error); nested use joins the outer one."""

    def __init__(self, db: sqlite3.Connection, *, relax: bool = False) -> None:
        self._db = db
        self._outer = False
        self._relax = relax  # this commit without fsync (synchronous=FULL again afterwards)

    def __enter__(self) -> None:
        if not self._db.in_transaction:
            if self._relax:
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            self._outer = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._outer:
            return
        try:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            if self._relax:
                self._db.execute("PRAGMA synchronous=FULL")


# ---------------------------------------------------------------------- quarantine


def _add_quarantine_columns(db: sqlite3.Connection) -> None:
    have = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
    for name, kind in _OUTBOX_COLUMNS_ADDED:
        if name not in have:
            db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {kind}")


def _quarantine_of(db: sqlite3.Connection) -> list[Quarantined]:
    rows = db.execute(
        "SELECT sector, count(*), coalesce(sum(n), 0), min(refused) FROM outbox"
        " WHERE refused IS NOT NULL GROUP BY sector ORDER BY sector"
    ).fetchall()
    return [Quarantined(SECTORS[s], int(e), int(n), str(r)) for s, e, n, r in rows]


def requeue_quarantine(
    path: str | Path, agent_id: str, sectors: Iterable[Sector] | None = None
) -> list[Quarantined]:
    """Clear the quarantine mark of refused envelopes (all, or those of ``sectors``) so the
    agent sends them again, unchanged, from its next start. Safe while the agent runs (one
    SQLite transaction); returns what was requeued. ConfigError when the file belongs to
    another agent or does not exist."""
    p = Path(path)
    if not p.exists():
        raise ConfigError("buffer.path", f"{p} does not exist: nothing to requeue")
    db = sqlite3.connect(p, isolation_level=None, timeout=30)
    try:
        owner = db.execute("SELECT value FROM meta WHERE key = 'agent_id'").fetchone()
        if owner is None or owner[0] != agent_id:
            raise ConfigError(
                "agent.id", f"the buffer {p} belongs to {owner[0] if owner else 'no agent'!r}"
            )
        _add_quarantine_columns(db)
        wanted = [SECTOR_INDEX[s] for s in sectors] if sectors is not None else None
        where = "refused IS NOT NULL" + (
            f" AND sector IN ({','.join('?' * len(wanted))})" if wanted is not None else ""
        )
        with _Tx(db):
            before = {q.sector: q for q in _quarantine_of(db)}
            db.execute(
                f"UPDATE outbox SET refused = NULL, refused_us = NULL WHERE {where}",  # noqa: S608 - placeholders only
                wanted or [],
            )
            after = {q.sector for q in _quarantine_of(db)}
        return [q for s, q in before.items() if s not in after]
    finally:
        db.close()


# ---------------------------------------------------------------------- damage handling


def _check(path: Path) -> str:
    """'' if the file is a healthy buffer, else what is wrong with it."""
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        return f"cannot open: {exc}"
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            return "quick_check: " + "; ".join(str(r[0]) for r in rows[:3])
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if names and not {"chunk", "outbox", "meta"} <= names:
            return f"not an agent buffer (tables: {', '.join(sorted(names))})"
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        db.close()
    return ""


@dataclass
class _Salvage:
    problem: str
    chunks: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    readings: int = 0
    expected: int | None = None
    bad_rows: int = 0

    def lost(self) -> int | None:
        if self.expected is None:
            return None
        return max(0, self.expected - self.readings)


def _salvage(path: Path) -> _Salvage:
    """Copy every readable row out of a damaged buffer file (opened read-only)."""
    problem = (
        (path.parent / "REASON").read_text().strip() if (path.parent / "REASON").exists() else ""
    )
    s = _Salvage(problem)
    # work on a copy: the quarantined files stay as they were found, for a post-mortem
    work = path.with_name("salvage-work.db")
    import shutil  # here: with bz2 and lzma, ~0.2 MB of RSS a running agent need not hold

    for suffix in ("", "-wal"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            shutil.copyfile(src, work.with_name(work.name + suffix))
    try:
        db = sqlite3.connect(work, isolation_level=None)
        # read past a header that promises more pages than the file has (a truncated file)
        db.execute("PRAGMA writable_schema=ON")
    except sqlite3.Error:
        return s
    try:
        try:
            db.execute("SELECT name FROM sqlite_master").fetchall()
        except sqlite3.DatabaseError:
            return s  # not a database at all (or its schema is gone): nothing to read
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'pending'").fetchone()
            s.expected = int(row[0]) if row else None
        except sqlite3.DatabaseError:
            s.expected = None
        for table, cols in (
            ("chunk", "sector, prio, n, bytes, added_us, data"),
            ("outbox", "sector, boot_id, seq, n, gaps, added_us, bytes, payload"),
        ):
            got, bad = _rows(db, table, cols)
            if table == "chunk":
                s.chunks = [r for r in got if chunk_is_intact(r[5], r[2])]
                s.readings += sum(int(r[2]) for r in s.chunks)
                bad += len(got) - len(s.chunks)
            else:
                s.outbox = [r for r in got if _envelope_is_intact(r[7], r[3], r[4])]
                s.readings += sum(int(r[3]) for r in s.outbox)
                bad += len(got) - len(s.outbox)
            s.bad_rows += bad
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            work.with_name(work.name + suffix).unlink(missing_ok=True)
    return s


def _envelope_is_intact(payload: object, n: object, gaps: object) -> bool:
    if not isinstance(payload, bytes):
        return False
    try:
        env = decode(payload)
    except DecodeError:
        return False
    return len(env) == n and len(env.gaps) == gaps


def _rows(db: sqlite3.Connection, table: str, cols: str) -> tuple[list[tuple[Any, ...]], int]:
    """All readable rows of ``table``: a scan, then row-by-row lookups past a damaged page."""
    got: dict[int, tuple[Any, ...]] = {}
    try:
        for r in db.execute(f"SELECT id, {cols} FROM {table} ORDER BY id"):  # noqa: S608 - fixed names
            got[int(r[0])] = tuple(r[1:])
        return list(got.values()), 0
    except sqlite3.DatabaseError:
        pass
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        top = int(row[0]) if row else max(got, default=0) + 10_000
    except sqlite3.DatabaseError:
        top = max(got, default=0) + 10_000
    bad = 0
    start = max(got, default=0) + 1
    for i in range(start, top + 1):
        try:
            r = db.execute(f"SELECT {cols} FROM {table} WHERE id = ?", (i,)).fetchone()  # noqa: S608
        except sqlite3.DatabaseError:
            bad += 1
            continue
        if r is not None:
            got[i] = tuple(r)
    return [got[i] for i in sorted(got)], bad
