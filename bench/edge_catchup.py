"""Edge-agent catch-up after an outage: how fast the backlog drains behind live readings.

Fills a buffer with ``--backlog-s`` seconds of readings at ``--rate`` readings/s, handed over
long enough ago to be backlog (as if the broker had been away), then starts the real agent
process on it (pinned to one core, durable buffering on) with a live source at the same rate
and measures, from its Prometheus endpoint, how long the backlog takes to drain and that live
envelopes keep flowing meanwhile. Runs uncapped and with ``--cap`` readings/s.

    python bench/edge_catchup.py [--rate 1000] [--backlog-s 300] [--cap 5000] [--cpu 1]

Catch-up factor = backlog seconds / drain seconds (the issue asks >= 20 uncapped at 1,000/s).
Needs Kafka (``qilu services up``). Writes bench/results/edge_catchup.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge_agent.buffer import Buffer
from edge_agent.chunks import split
from edge_support import (
    add_common_args,
    agent_config,
    bench_topics,
    cpu_seconds,
    running_agent,
    scrape,
    write_result,
)

from qilu.contract import Reading
from qilu.ports import free_port


def prefill(path: Path, readings: int, rate: float) -> None:
    """``readings`` handed over at ``rate``/s, ending 60 s ago (older than the live window)."""
    start_us = time.time_ns() // 1000 - int((readings / rate + 60) * 1e6)
    clock_now = [start_us]
    b = Buffer(
        path,
        "bench-agent",
        max_bytes=1 << 30,
        max_age_s=86_400.0,
        fsync="os",
        clock=lambda: clock_now[0],
    )
    b.open()
    step = int(rate // 20) or 1
    devices = [f"CHG-370100-00001-{i:04d}" for i in range(500)]
    for i in range(0, readings, step):
        clock_now[0] = start_us + int(i / rate * 1e6)
        ts = clock_now[0]
        b.add(
            split(
                [
                    Reading(devices[j % 500], "power_kw", ts + j % 500, float(j % 120))
                    for j in range(i, min(i + step, readings))
                ],
                500,
            )
        )
    b.close()


def run(args: argparse.Namespace, prefix: str, cap: float) -> dict[str, object]:
    backlog = int(args.rate * args.backlog_s)
    with tempfile.TemporaryDirectory(prefix="qilu-edge-catchup-") as tmp:
        folder = Path(tmp)
        t0 = time.monotonic()
        prefill(folder / "buffer.db", backlog, args.rate)
        fill_s = time.monotonic() - t0
        port = free_port()
        cfg = agent_config(
            folder,
            rate=args.rate,
            bootstrap=args.bootstrap,
            prefix=prefix,
            metrics_port=port,
            backlog_rate=cap,
            max_bytes=1 << 30,
        )
        samples = []
        with running_agent(cfg, folder / "agent.log", cpu=args.cpu, metrics_port=port) as proc:
            start, c0 = time.monotonic(), cpu_seconds(proc.pid)
            drained_at = None
            while time.monotonic() - start < args.timeout:
                m = scrape(port)
                t = time.monotonic() - start
                waiting = m.get("qilu_agent_buffer_readings", 0)
                samples.append((round(t, 2), waiting, m.get("qilu_agent_readings_sent_total", 0)))
                if waiting < 3 * args.rate and t > 1:  # only live readings left
                    drained_at = t
                    break
                time.sleep(0.5)
            cpu = cpu_seconds(proc.pid) - c0
            final = scrape(port)
    live_envs = sum(v for k, v in final.items() if k == "qilu_agent_envelopes_sent_total")
    res: dict[str, object] = {
        "backlog_readings": backlog,
        "backlog_seconds_of_real_time": args.backlog_s,
        "live_rate": args.rate,
        "backlog_rate_cap": cap or "uncapped",
        "prefill_s": round(fill_s, 1),
        "drain_s": round(drained_at, 1) if drained_at else None,
        "drain_readings_per_s": round(backlog / drained_at) if drained_at else None,
        "catch_up_factor": round(args.backlog_s / drained_at, 1) if drained_at else None,
        "cpu_pct_of_one_core_while_draining": round(cpu / drained_at * 100, 1)
        if drained_at
        else None,
        "envelopes_sent": live_envs,
        "samples": samples[:: max(1, len(samples) // 20)],
    }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="live readings/s (default 1000)")
    ap.add_argument("--backlog-s", type=float, default=300.0, help="outage length to catch up")
    ap.add_argument("--cap", type=float, default=5000.0, help="capped run's backlog_rate")
    ap.add_argument(
        "--timeout", type=float, default=600.0, help="seconds a drain may take (default 600)"
    )
    add_common_args(ap)
    args = ap.parse_args()
    runs = []
    with bench_topics(args.bootstrap) as prefix:
        for cap in (0.0, args.cap):
            label = "uncapped" if not cap else f"capped at {cap:,.0f}/s"
            print(
                f"{args.backlog_s:.0f} s of backlog at {args.rate:,.0f}/s, {label} ...", flush=True
            )
            r = run(args, prefix, cap)
            print(json.dumps({k: v for k, v in r.items() if k != "samples"}), flush=True)
            runs.append(r)
    write_result(
        "edge_catchup",
        {
            "pinned_cpu": args.cpu,
            "target": "catch_up_factor >= 20 uncapped at 1,000 readings/s",
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
