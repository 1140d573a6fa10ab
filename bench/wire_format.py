"""Wire-format benchmark: encode and decode cost per reading for candidate envelope encodings.

Usage: python bench/wire_format.py [--batch 500] [--rounds 200]

Each candidate encodes one envelope of ``--batch`` readings (realistic device ids and metric
names from a generated registry) and decodes it back to the columns the ingest consumer
needs. Prints a table and writes bench/results/wire_format.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pyarrow as pa

from qilu.contract import Envelope, decode
from qilu.devices import KINDS
from qilu.registry import generate

Columns = tuple[list[str], list[str], list[int], list[float], list[int]]


def sample(batch: int) -> Envelope:
    reg = generate(1, 0.01)
    env = Envelope("agent-charging-370200", "5f0c6a2b9d8e4f00a1b2c3d4e5f60718", 42, 1)
    t0 = 1_763_900_000_000_000
    i = 0
    while len(env) < batch:
        d = reg.devices[i % len(reg.devices)]
        for m in KINDS[d.kind].metrics:
            if len(env) < batch:
                env.devices.append(d.device_id)
                env.metrics.append(m.key)
                env.ts_us.append(t0 + i * 1000)
                env.values.append(12.345 + i)
                env.qualities.append(0)
        i += 1
    return env


def cols(e: Envelope) -> Columns:
    return e.devices, e.metrics, e.ts_us, e.values, e.qualities


def json_rows(e: Envelope) -> tuple[Callable[[], bytes], Callable[[bytes], Columns]]:
    def enc() -> bytes:
        return orjson.dumps(
            {
                "v": 1,
                "a": e.agent_id,
                "b": e.boot_id,
                "s": e.seq,
                "r": [
                    {"d": d, "m": m, "t": t, "x": x, "q": q}
                    for d, m, t, x, q in zip(*cols(e), strict=True)
                ],
            }
        )

    def dec(b: bytes) -> Columns:
        rows = orjson.loads(b)["r"]
        return (
            [r["d"] for r in rows],
            [r["m"] for r in rows],
            [r["t"] for r in rows],
            [r["x"] for r in rows],
            [r["q"] for r in rows],
        )

    return enc, dec


def json_columns(e: Envelope) -> tuple[Callable[[], bytes], Callable[[bytes], Columns]]:
    def enc() -> bytes:
        d, m, t, x, q = cols(e)
        return orjson.dumps(
            {
                "v": 1,
                "a": e.agent_id,
                "b": e.boot_id,
                "s": e.seq,
                "d": d,
                "m": m,
                "ts": t,
                "x": x,
                "q": q,
            }
        )

    def dec(b: bytes) -> Columns:
        o = orjson.loads(b)
        return o["d"], o["m"], o["ts"], o["x"], o["q"]

    return enc, dec


def msgpack_rows(e: Envelope) -> tuple[Callable[[], bytes], Callable[[bytes], Columns]]:
    def enc() -> bytes:
        return msgpack.packb(
            {
                "v": 1,
                "a": e.agent_id,
                "b": e.boot_id,
                "s": e.seq,
                "r": list(zip(*cols(e), strict=True)),
            }
        )

    def dec(b: bytes) -> Columns:
        rows = msgpack.unpackb(b)["r"]
        d, m, t, x, q = zip(*rows, strict=True)
        return list(d), list(m), list(t), list(x), list(q)

    return enc, dec


def msgpack_columns(e: Envelope) -> tuple[Callable[[], bytes], Callable[[bytes], Columns]]:
    def dec(b: bytes) -> Columns:
        return cols(decode(b))  # the platform's own decoder, validation included

    return e.encode, dec


def arrow_ipc(e: Envelope) -> tuple[Callable[[], bytes], Callable[[bytes], Columns]]:
    schema = pa.schema(
        [
            ("d", pa.string()),
            ("m", pa.string()),
            ("ts", pa.int64()),
            ("x", pa.float64()),
            ("q", pa.int8()),
        ]
    )

    def enc() -> bytes:
        batch = pa.record_batch(list(cols(e)), schema=schema)
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, schema) as w:
            w.write_batch(batch)
        return sink.getvalue()

    def dec(b: bytes) -> Columns:
        t = pa.ipc.open_stream(b).read_all()
        return (
            t.column(0).to_pylist(),
            t.column(1).to_pylist(),
            t.column(2).to_pylist(),
            t.column(3).to_pylist(),
            t.column(4).to_pylist(),
        )

    return enc, dec


CANDIDATES = {
    "json rows (orjson)": json_rows,
    "json columns (orjson)": json_columns,
    "msgpack rows": msgpack_rows,
    "msgpack columns (chosen)": msgpack_columns,
    "arrow ipc stream": arrow_ipc,
}


def best_of(fn: Callable[[], Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, (time.perf_counter() - t) / rounds)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=500, help="readings per envelope (default 500)")
    ap.add_argument(
        "--rounds", type=int, default=200, help="calls per timing, best of 5 (default 200)"
    )
    a = ap.parse_args()
    env = sample(a.batch)
    results = []
    print(f"{'encoding':28}{'bytes/reading':>15}{'encode ns/r':>13}{'decode ns/r':>13}")
    for name, make in CANDIDATES.items():
        enc, dec = make(env)
        blob = enc()
        if dec(blob) != cols(env):
            raise SystemExit(f"{name}: round trip is not exact")
        e_s, d_s = best_of(enc, a.rounds), best_of(lambda: dec(blob), a.rounds)  # noqa: B023
        row = {
            "encoding": name,
            "bytes_per_reading": len(blob) / a.batch,
            "encode_ns_per_reading": e_s / a.batch * 1e9,
            "decode_ns_per_reading": d_s / a.batch * 1e9,
        }
        results.append(row)
        print(
            f"{name:28}{row['bytes_per_reading']:15.1f}{row['encode_ns_per_reading']:13.0f}"
            f"{row['decode_ns_per_reading']:13.0f}"
        )
    out = Path(__file__).parent / "results" / "wire_format.json"
    meta = {
        "batch": a.batch,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    out.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
