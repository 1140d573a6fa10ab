"""The simulated province's agents alone: CPU seconds of their process per reading generated.

Runs the agents of ``qilu agent province`` (edge_agent/province.py: per agent its own feed,
durable buffer, sequence and Ed25519 key, one shared producer) for a part of the province
against the local Kafka (``qilu services up``), on a private topic prefix, in a fresh child
process per variant, variants alternated ``--rounds`` times. Per run: the process's CPU time
(all threads) and the readings the agents stored in their buffers over ``--window`` seconds,
from ``--warmup`` seconds after every agent stored its first hand-over (the feeds' start-up
burst of every device's latest report stays out of it), hence microseconds of CPU per reading
(stable under load, unlike wall time), split into user and system (kernel) time and by
thread kind (the event loop, the shared buffer and send threads, the producer's network
thread); the same over the whole run (start to drained stop, the feeds' start-up included);
the process's peak RSS. On stop every agent drains for up to
10 s; ``delivered`` counts the readings acknowledged by Kafka, ``left_in_buffers`` what a slow
drain left for a next start.

    python bench/province_agents.py [--cities 370100 370200 370300] [--window 60] [--rounds 2]

Variants: ``before`` (hand-over every 1 s, 500-reading envelopes formed within 1 s: the real
agent's defaults the province used) and ``province`` (edge_agent.province's defaults).
Writes bench/results/province_agents.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "edge-agent")]

from bench.common import run_header  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "before": {"tick_s": 1.0, "envelope_readings": 500, "envelope_delay_s": 1.0},
    "province": {},  # edge_agent.province's defaults
}


def _thread_cpu() -> dict[str, tuple[float, float]]:
    """Thread kind (its name up to the first '-': MainThread, buffer, send, the producer's
    network thread named after its client id) -> (user, system) CPU seconds, summed over the
    live threads of that kind (from /proc; empty where there is none)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, tuple[float, float]] = {}
    tasks = Path("/proc/self/task")
    for task in tasks.iterdir() if tasks.is_dir() else ():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        kind = names.get(int(task.name), "other").split("-")[0]
        user, system = out.get(kind, (0.0, 0.0))
        out[kind] = (user + int(fields[11]) / tick, system + int(fields[12]) / tick)
    return out


def _readings_in(agent_ids: list[str]) -> float:
    from edge_agent import metrics as m

    return float(sum(m.READINGS_IN.labels(a)._value.get() for a in agent_ids))


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One variant in this process: build, warm up, measure, stop, check the drain."""
    from edge_agent.agent import SharedProducer, new_producer
    from edge_agent.province import build_agents, plan_agents, run_agents

    from bench.edge_support import delete_topics
    from qilu.contract import Sector
    from qilu.registry import generate
    from qilu.settings import KafkaSettings
    from qilu.signing import Signer, generate_key
    from stream.topics import ensure_topics

    kafka = KafkaSettings(topic_prefix=f"bench-provagents-{uuid.uuid4().hex[:8]}")
    ensure_topics(kafka)
    reg = generate(args.seed, args.scale)
    plan = plan_agents(reg, sectors=list(Sector), cities=args.cities)
    signers = {a: Signer(1, generate_key().private_b64) for a in plan}
    producer = SharedProducer(partial(new_producer, kafka.bootstrap, "bench-provagents"))
    with tempfile.TemporaryDirectory() as state:
        agents = build_agents(
            reg, plan, producer, kafka.topic_prefix,
            state_dir=Path(state), seed=args.seed, signers=signers, iec104_cities=(),
            **VARIANTS[args.child],
        )  # fmt: skip
        ids = [a.agent_id for a in agents]
        out: dict[str, Any] = {}

        async def main() -> None:
            stop = asyncio.Event()
            began_cpu, began = time.process_time(), time.monotonic()
            task = asyncio.create_task(run_agents(agents, stop))
            # the feeds build their devices when they start, then hand over each device's
            # latest report at once: the window begins --warmup seconds after every agent
            # stored its first hand-over, so that burst is not in it
            while any(_readings_in([a]) == 0 for a in ids):  # noqa: ASYNC110 - a counter
                await asyncio.sleep(0.5)
            out["ready_after_s"] = round(time.monotonic() - began, 1)
            await asyncio.sleep(args.warmup)
            cpu0, n0, t0 = time.process_time(), _readings_in(ids), time.monotonic()
            times0, threads0 = os.times(), _thread_cpu()
            await asyncio.sleep(args.window)
            cpu1, n1, t1 = time.process_time(), _readings_in(ids), time.monotonic()
            times1, threads1 = os.times(), _thread_cpu()
            stop.set()
            await task
            ended_cpu, ended = time.process_time(), time.monotonic()
            readings = n1 - n0
            stored = int(_readings_in(ids))
            out.update(
                agents=len(agents),
                cpu_s=round(cpu1 - cpu0, 3),
                wall_s=round(t1 - t0, 3),
                readings=int(readings),
                readings_per_s=round(readings / (t1 - t0), 1),
                cpu_us_per_reading=round((cpu1 - cpu0) / readings * 1e6, 2),
                # of which in the kernel (system time: SQLite's writes and syncs, sockets,
                # wake-ups) and per thread kind, [user, system] us per reading
                user_us_per_reading=round((times1.user - times0.user) / readings * 1e6, 2),
                system_us_per_reading=round((times1.system - times0.system) / readings * 1e6, 2),
                threads_us_per_reading={
                    kind: [
                        round((u - threads0.get(kind, (0.0, 0.0))[0]) / readings * 1e6, 2),
                        round((s - threads0.get(kind, (0.0, 0.0))[1]) / readings * 1e6, 2),
                    ]
                    for kind, (u, s) in sorted(threads1.items())
                },
                cores=round((cpu1 - cpu0) / (t1 - t0), 3),
                # the whole run, start to drained stop: every reading the feeds generated
                run_cpu_s=round(ended_cpu - began_cpu, 3),
                run_wall_s=round(ended - began, 3),
                stored_total=stored,
                run_cpu_us_per_reading=round((ended_cpu - began_cpu) / stored * 1e6, 2),
                # the sender's count misses acks persisted while its task was cancelled on stop
                sent_counted=sum(a.sent_readings for a in agents),
                delivered=stored - sum(a.buffer.pending for a in agents),
                sent_envelopes=sum(a.sent_envelopes for a in agents),
                left_in_buffers=sum(a.buffer.pending for a in agents),
                load=os.getloadavg(),
            )

        try:
            asyncio.run(main())
        finally:
            producer.close(10.0)
            delete_topics(kafka.bootstrap, kafka.topic_prefix)  # a run's topics go with it
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1, help="registry and simulation seed")
    ap.add_argument("--scale", type=float, default=1.0, help="registry scale (default 1.0)")
    ap.add_argument(
        "--cities",
        nargs="+",
        default=["370100", "370200", "370300"],
        help="city codes whose agents (all three sectors) run (default Jinan, Qingdao, Zibo: "
        "9 agents, ~8,600 readings/s)",
    )
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    ap.add_argument("--window", type=float, default=60.0, help="measured seconds per run")
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the variants")
    ap.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
        help="variants to alternate (default all)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "province_agents.json",
                    help="result file")  # fmt: skip
    ap.add_argument("--child", choices=list(VARIANTS), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.stdout.write(json.dumps(child(args)) + "\n")
        return
    result = run_header("bench/province_agents.py")
    result["variants"] = {k: VARIANTS[k] for k in args.variants}
    runs = []
    for rnd in range(args.rounds):
        for v in args.variants:
            cmd = [sys.executable, __file__, "--child", v, "--seed", str(args.seed),
                   "--scale", str(args.scale), "--warmup", str(args.warmup),
                   "--window", str(args.window), "--cities", *args.cities]  # fmt: skip
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            run = {"round": rnd, "variant": v, **json.loads(done.stdout.strip().splitlines()[-1])}
            runs.append(run)
            sys.stderr.write(json.dumps(run) + "\n")
    result["runs"] = runs
    result["summary"] = {
        v: {
            "cpu_us_per_reading": [r["cpu_us_per_reading"] for r in runs if r["variant"] == v],
            "system_us_per_reading": [
                r["system_us_per_reading"] for r in runs if r["variant"] == v
            ],
            "run_cpu_us_per_reading": [
                r["run_cpu_us_per_reading"] for r in runs if r["variant"] == v
            ],
            "peak_rss_mb": [r["peak_rss_mb"] for r in runs if r["variant"] == v],
            "cpu_us_per_reading_mean": round(
                statistics.fmean(r["cpu_us_per_reading"] for r in runs if r["variant"] == v), 2
            ),
        }
        for v in args.variants
    }
    result["load_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stderr.write(json.dumps(result["summary"]) + "\n")


if __name__ == "__main__":
    main()
