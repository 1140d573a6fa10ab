"""Durable-buffer candidates on this machine: SQLite in WAL mode vs an append-only segment log.

Both store the same payload (a msgpack chunk of readings per collector hand-over) and make it
durable before returning, with one fsync per batch. Measured per candidate:

- append: hand-overs of ``--batch`` readings, each committed and fsynced (the agent's ack path);
- reclaim: acknowledging (deleting) the oldest half, as the sender does after the broker acks;
- evict: dropping the 10 % oldest *non-alarm* chunks while alarm chunks stay (the full-buffer
  policy), which a log can only do by rewriting segments;
- disk bytes per reading.

    python bench/edge_buffer.py [--readings 200000] [--batch 100]

Writes bench/results/edge_buffer.json. The numbers decide docs/adr/0006-edge-buffer.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import struct
import tempfile
import time
from pathlib import Path

import msgpack

RESULTS = Path(__file__).resolve().parent / "results"


def chunk(i: int, n: int) -> bytes:
    base = 1_763_900_000_000_000 + i * n
    return msgpack.packb(
        [
            [f"CHG-370100-00001-P{(i * n + k) % 97:03d}" for k in range(n)],
            ["power_kw"] * n,
            [base + k for k in range(n)],
            [float(k) * 1.5 for k in range(n)],
            [0] * n,
        ]
    )


def bench_sqlite(folder: Path, total: int, batch: int) -> dict[str, float]:
    path = folder / "buf.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE chunk (id INTEGER PRIMARY KEY, prio INTEGER, n INTEGER, data BLOB)")
    db.execute("CREATE INDEX chunk_evict ON chunk (prio, id)")
    blobs = [chunk(i, batch) for i in range(total // batch)]
    t0 = time.perf_counter()
    for i, b in enumerate(blobs):
        db.execute("BEGIN")
        db.execute("INSERT INTO chunk (prio, n, data) VALUES (?, ?, ?)", (i % 50 == 0, batch, b))
        db.execute("COMMIT")
    append = time.perf_counter() - t0
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    t0 = time.perf_counter()
    half = len(blobs) // 2
    for lo in range(0, half, 10):  # acks arrive per envelope of ~5 chunks: delete in small steps
        db.execute("BEGIN")
        db.execute("DELETE FROM chunk WHERE id > ? AND id <= ?", (lo, lo + 10))
        db.execute("COMMIT")
    reclaim = time.perf_counter() - t0
    t0 = time.perf_counter()
    db.execute("BEGIN")
    db.execute(
        "DELETE FROM chunk WHERE id IN (SELECT id FROM chunk WHERE prio = 0 ORDER BY id LIMIT ?)",
        (len(blobs) // 10,),
    )
    db.execute("COMMIT")
    evict = time.perf_counter() - t0
    db.close()
    return {
        "append_readings_per_s": total / append,
        "append_us_per_handover": append / len(blobs) * 1e6,
        "reclaim_readings_per_s": half * batch / reclaim,
        "evict_10pct_ms": evict * 1e3,
        "disk_bytes_per_reading": size / total,
    }


def bench_log(folder: Path, total: int, batch: int) -> dict[str, float]:  # noqa: PLR0915
    """Length-prefixed records in 4 MB segments; acks move a cursor, whole segments are deleted."""
    seg_bytes = 4 << 20
    blobs = [chunk(i, batch) for i in range(total // batch)]
    segs: list[Path] = []
    fd = -1
    written = 0
    t0 = time.perf_counter()
    for i, b in enumerate(blobs):
        if fd < 0 or written >= seg_bytes:
            if fd >= 0:
                os.close(fd)
            segs.append(folder / f"{len(segs):08d}.log")
            fd = os.open(segs[-1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            written = 0
        rec = struct.pack("<IIB", len(b), i, i % 50 == 0) + b
        os.write(fd, rec)
        os.fsync(fd)
        written += len(rec)
    os.close(fd)
    append = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in segs)
    # reclaim: persist the ack cursor (fsync) per ack step; delete fully acknowledged segments
    cursor = folder / "cursor"
    t0 = time.perf_counter()
    half = len(blobs) // 2
    for lo in range(0, half, 10):
        cfd = os.open(cursor, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(cfd, struct.pack("<Q", lo + 10))
        os.fsync(cfd)
        os.close(cfd)
    for p in segs[: len(segs) // 2]:
        p.unlink()
    reclaim = time.perf_counter() - t0
    # evict the oldest 10 % non-alarm records: rewrite the segments that hold them
    t0 = time.perf_counter()
    dropped, need = 0, len(blobs) // 10
    for p in segs[len(segs) // 2 :]:
        if dropped >= need:
            break
        data = p.read_bytes()
        out = bytearray()
        pos = 0
        while pos < len(data):
            n, _, alarm = struct.unpack_from("<IIB", data, pos)
            end = pos + 9 + n
            if alarm or dropped >= need:
                out += data[pos:end]
            else:
                dropped += 1
            pos = end
        tmp = p.with_suffix(".tmp")
        tmp.write_bytes(out)
        tfd = os.open(tmp, os.O_RDONLY)
        os.fsync(tfd)
        os.close(tfd)
        tmp.replace(p)
    evict = time.perf_counter() - t0
    return {
        "append_readings_per_s": total / append,
        "append_us_per_handover": append / len(blobs) * 1e6,
        "reclaim_readings_per_s": half * batch / reclaim,
        "evict_10pct_ms": evict * 1e3,
        "disk_bytes_per_reading": size / total,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--readings", type=int, default=200_000, help="readings written (default 200000)"
    )
    ap.add_argument("--batch", type=int, default=100, help="readings per hand-over (one fsync)")
    args = ap.parse_args()
    out: dict[str, object] = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "readings": args.readings,
        "batch": args.batch,
    }
    for name, fn in (("sqlite_wal", bench_sqlite), ("append_log", bench_log)):
        with tempfile.TemporaryDirectory(dir=RESULTS.parent) as tmp:
            res = fn(Path(tmp), args.readings, args.batch)
        out[name] = {k: round(v, 2) for k, v in res.items()}
        print(name, json.dumps(out[name]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "edge_buffer.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
