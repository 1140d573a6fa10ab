"""The restore drill (issue 20 item 5, docs/operations.md): on a PostgreSQL cluster of its
own, with WAL archived by pgBackRest, a ledger of readings from signed agents is ingested
(authentication on), backed up, ingested further, an agent is provisioned after the restore
target and sends the rest, the readings table is dropped, and the database is restored with
``qilu restore`` (to a time, or to a named restore point) to before the damage. The agent
provisioned after the target is re-applied, as the command says, and the ingest replays
Kafka from the restored database's offsets. Every reading of the ledger must then be stored
exactly once, and the rollups must equal a recomputation. The steps are timed (printed, and
appended to ``$QILU_FAULTS_REPORT`` when set).

Then the same cluster's archive is broken (archive_command fails): ``qilu backup status``
must report it stalled, and the alert rule's query must see the lag.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from ops import cli
from ops.backup import (
    BackupType,
    Layout,
    PgBackRest,
    assess,
)
from ops.backup_cli import current_status, schedule_round, status_lines
from qilu.settings import BackupSettings, DatabaseSettings, KafkaSettings, Settings
from qilu.signing import KeyPair, Signer, generate_key
from storage import agents, maintain, verify
from storage.db import connect
from storage.restore_points import create_restore_point
from storage.wal_archive import (
    ARCHIVE_SQL,
    archive_lag_s,
    pending_segments,
    read_archiver,
)
from stream.cli import build_consumer
from tests.helpers import scalar, wait_for
from tests.integration.conftest import RunningIngest
from tests.integration.faults import (
    Ledger,
    PrivatePostgres,
    private_postgres,
    register_devices,
    wait_writable,
)
from tests.integration.replay import agent_ids, database_offsets, produce

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TOTAL = 12_000
BACKED_UP = 4_000  # stored when the base backup is taken
BEFORE_DAMAGE = 8_000  # stored at the restore target
LATE_AGENT = "replay-agent-late"  # provisioned after the target; sends the last part
POINT = "drill-before-damage"


def start_ingest(settings: Settings) -> RunningIngest:
    """The real ingest consumer in a thread (as tests/integration/conftest.py starts it)."""
    stop = threading.Event()
    consumer, pool = build_consumer(settings, stop)

    def run() -> None:
        try:
            consumer.run()
        finally:
            pool.close()

    thread = threading.Thread(target=run, name="drill-ingest", daemon=True)
    thread.start()
    return RunningIngest(thread, stop)


def stop_ingest(r: RunningIngest) -> None:
    r.stop.set()
    r.thread.join(timeout=60)
    assert not r.thread.is_alive()


def provision(db: DatabaseSettings, agent_id: str, devices: list[str], key: KeyPair) -> None:
    """The agent in the registry with the ledger devices' sites (audited, as the CLI does)."""
    with connect(db) as conn:
        sites = sorted(set(agents.device_sites(conn, devices).values()))
        agents.provision(conn, agent_id, sites, key.public, actor="cli:drill")
        conn.commit()


@pytest.fixture
def cluster(base_settings: Settings) -> Iterator[PrivatePostgres]:
    with private_postgres(base_settings) as pg:
        yield pg


def use_cluster(monkeypatch: pytest.MonkeyPatch, settings: Settings, bk: PgBackRest) -> None:
    """The environment that points the `qilu` command at the private cluster."""
    monkeypatch.setenv("QILU_SERVICES__STATE_DIR", str(settings.services.state_dir))
    monkeypatch.setenv("QILU_SERVICES__POSTGRES_PORT", str(settings.services.postgres_port))
    monkeypatch.setenv("QILU_DB__PORT", str(settings.db.port))
    monkeypatch.setenv("QILU_DB__NAME", settings.db.name)
    monkeypatch.setenv("QILU_BACKUP__HOME", str(bk.layout.home))


def _settings(base: Settings, pg: PrivatePostgres, kafka: KafkaSettings) -> Settings:
    """The private cluster's settings; ingest authentication stays on (signed envelopes)."""
    state = pg.svc.ctx.state_dir
    ingest = base.ingest.model_copy(
        update={"group_id": f"g{uuid.uuid4().hex[:10]}", "metrics_port": 0, "authenticate": True}
    )
    storage = base.storage.model_copy(update={"maintain_in_ingest": False})
    return base.model_copy(
        update={
            "services": pg.svc.ctx.settings,
            "db": pg.db,
            "kafka": kafka,
            "ingest": ingest,
            "storage": storage,
            "backup": BackupSettings(home=state / "pgbackrest"),
        }
    )


@pytest.mark.parametrize("by", ["time", "point"])
def test_restore_drill_every_reading_once_rollups_equal(
    base_settings: Settings,
    cluster: PrivatePostgres,
    kafka: KafkaSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    by: str,
) -> None:
    began = time.monotonic()
    settings = _settings(base_settings, cluster, kafka)
    bk = PgBackRest(Layout.of(settings.backup, settings.services, settings.db), settings.backup)
    bk.install(lambda _: None)
    bk.configure(lambda _: None)
    cluster.stop()  # archive_mode needs a restart
    cluster.start()
    bk.stanza_create()
    bk.check()
    setup_s = time.monotonic() - began

    db = settings.db
    stored = "SELECT count(*) FROM readings"
    ledger = Ledger(register_devices(db), TOTAL)
    keys = {a: generate_key() for a in [*agent_ids(), LATE_AGENT]}
    signers = {a: Signer(1, k.private_b64) for a, k in keys.items()}
    for a in agent_ids():
        provision(db, a, ledger.devices, keys[a])
    topic = f"{kafka.topic_prefix}.readings.charging"
    wait_writable(kafka, topic)

    produce(ledger, kafka, topic, 0, BACKED_UP, signers=signers)
    ingest = start_ingest(settings)
    wait_for(lambda: scalar(db, stored) == BACKED_UP, 120, "first part stored")
    t = time.monotonic()
    bk.backup(BackupType.FULL)
    backup_s = time.monotonic() - t
    backup_stop = bk.info()[-1].stopped

    # more readings while the ingest keeps running, then the point to go back to
    produce(ledger, kafka, topic, BACKED_UP, BEFORE_DAMAGE, signers=signers)
    wait_for(lambda: scalar(db, stored) == BEFORE_DAMAGE, 120, "second part stored")
    wait_for(
        lambda: sum(database_offsets(db, topic).values()) >= (BEFORE_DAMAGE // 250),
        60,
        "the offsets of the second part stored",
    )
    # pgBackRest starts a time target only from a backup whose stop time, in whole seconds,
    # is earlier than the target's: on a quiet machine the second part is stored within the
    # backup's last second, so wait until the target is clearly after it
    wait_for(
        lambda: scalar(db, "SELECT extract(epoch FROM now())") >= backup_stop.timestamp() + 2,
        10,
        "two seconds past the backup's stop",
    )
    with connect(db, autocommit=True) as conn:
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        target: datetime = row[0]
        assert create_restore_point(conn, POINT) is not None
    offsets_at_target = database_offsets(db, topic)

    # an agent provisioned after the target sends the rest of the ledger, then the damage
    provision(db, LATE_AGENT, ledger.devices, keys[LATE_AGENT])
    produce(ledger, kafka, topic, BEFORE_DAMAGE, TOTAL, agents=[LATE_AGENT], signers=signers)
    wait_for(lambda: scalar(db, stored) == TOTAL, 120, "third part stored")
    stop_ingest(ingest)
    with connect(db, autocommit=True) as conn:
        conn.execute("DROP TABLE readings CASCADE")
    bk.check()  # the WAL with the damage is archived too (a switch, then archive-push)

    # the command's dry run, while the damaged database still runs: the backup it starts
    # from, and (for a time) the audit log's changes the restore undoes
    use_cluster(monkeypatch, settings, bk)
    where = ["--to", target.isoformat()] if by == "time" else ["--point", POINT]
    data = bk.layout.data_dir
    capsys.readouterr()
    assert cli.main(["restore", *where, "--data-dir", str(data), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    backup_label = bk.info()[-1].label
    assert f"from backup {backup_label} (full" in printed, printed
    assert f"{data} is not empty" in printed, printed
    if by == "time":
        assert f"agent.provision agent {LATE_AGENT}" in printed, printed
    else:  # an operator's point: the audit log cannot tell when it was made
        assert "cannot tell when this restore point was made" in printed, printed

    # restore with the command into a fresh data directory (the damaged one moved away)
    t = time.monotonic()
    cluster.stop()
    damaged = data.with_name("data.damaged")
    data.rename(damaged)
    bk.layout.config_file.unlink()  # as on a new server: only the repository is there
    assert cli.main(["restore", *where, "--data-dir", str(data)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {bk.layout.config_file}" in printed, printed
    assert "re-apply the registry, agent and API key changes" in printed, printed
    cluster.start()
    wait_for(lambda: scalar(db, "SELECT pg_is_in_recovery()::int") == 0, 120, "promoted")
    restore_s = time.monotonic() - t
    shutil.rmtree(damaged, ignore_errors=True)

    # what the restored database holds: exactly the readings stored at the target
    assert scalar(db, stored) == BEFORE_DAMAGE
    assert database_offsets(db, topic) == offsets_at_target
    assert scalar(db, "SELECT count(*) FROM agents WHERE agent_id = 'replay-agent-late'") == 0

    # the change after the target re-applied (the agent keeps its key), then the replay:
    # the ingest resumes from the restored database's offsets
    provision(db, LATE_AGENT, ledger.devices, keys[LATE_AGENT])
    t = time.monotonic()
    ingest = start_ingest(settings)
    wait_for(lambda: scalar(db, stored) == TOTAL, 180, "the ledger stored again")
    replay_s = time.monotonic() - t
    stop_ingest(ingest)

    tally = ledger.tally(
        f"restore_drill_{by}",
        db,
        setup_s=round(setup_s, 1),
        backup_s=round(backup_s, 1),
        restore_s=round(restore_s, 1),
        replay_s=round(replay_s, 1),
        total_s=round(time.monotonic() - began, 1),
    )
    assert (tally.ledger, tally.lost, tally.duplicates, tally.rows) == (TOTAL, 0, 0, TOTAL)
    with connect(db) as conn:  # nothing of the agents refused (the topic probe is unsigned)
        refused = conn.execute(
            "SELECT agent_id, reason FROM deadletter_summary WHERE agent_id <> 'probe'"
        ).fetchall()
    assert refused == []

    # the rollups equal a recomputation from the raw readings
    now = datetime.now(UTC)
    lo = datetime.fromtimestamp(ledger.t0_us / 1e6, UTC).replace(minute=0, second=0, microsecond=0)
    with connect(db) as conn:
        maintain.refresh_rollups_postgres(conn, settings.storage, now)
        cmp = verify.compare(conn, lo, lo + timedelta(hours=2))
    assert cmp.buckets["readings_1m"] > 0
    assert cmp.equal, [str(m) for m in cmp.mismatches[:5]]

    # `qilu backup status` after the drill: one full backup, archiving healthy
    st = current_status(settings, bk)
    assert st.last_full is not None
    assert st.backups == 1
    assert st.repo_bytes > 0
    assert st.archive_mode == "on"
    assert not st.archive_failing, status_lines(st)
    assert st.ok, status_lines(st)
    with capsys.disabled():  # the drill's timings, swallowed by the captures above
        sys.stdout.write(tally.line() + "\n")


def test_backup_status_reports_a_stalled_archive(
    base_settings: Settings,
    cluster: PrivatePostgres,
    kafka: KafkaSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = _settings(base_settings, cluster, kafka)
    bk = PgBackRest(Layout.of(settings.backup, settings.services, settings.db), settings.backup)
    # set up by the commands an operator runs, on the private cluster
    use_cluster(monkeypatch, settings, bk)
    capsys.readouterr()
    assert cli.main(["backup", "setup"]) == 1  # archive_mode needs a restart: says so
    assert "restart PostgreSQL" in capsys.readouterr().out
    assert cli.main(["backup", "setup", "--restart"]) == 0
    assert "WAL archiving checked" in capsys.readouterr().out
    assert cli.main(["backup", "run", "--type", "auto"]) == 0  # none yet: a full one is due
    assert "full backup done" in capsys.readouterr().out
    assert cli.main(["backup", "run", "--type", "auto"]) == 0
    assert "nothing due" in capsys.readouterr().out
    assert cli.main(["backup", "status"]) == 0
    assert "status: ok" in capsys.readouterr().out
    # a round of the scheduler: nothing due, the status in the metrics
    assert schedule_round(settings, bk) == frozenset()
    full = REGISTRY.get_sample_value("qilu_backup_last_success_timestamp_seconds", {"type": "full"})
    assert full is not None
    assert full > time.time() - 600
    assert REGISTRY.get_sample_value("qilu_backup_problems") == 0
    db = settings.db
    backups = bk.info()

    # the repository becomes unreachable: every archive-push fails from now on
    repo = bk.layout.repo_path
    moved = repo.with_name("repo.away")
    repo.rename(moved)
    try:
        with connect(db, autocommit=True) as conn:
            for _ in range(2):  # two completed segments wait
                conn.execute("CREATE TABLE IF NOT EXISTS filler (x int)")
                conn.execute("INSERT INTO filler SELECT generate_series(1, 1000)")
                conn.execute("SELECT pg_switch_wal()")
        wait_for(
            lambda: scalar(db, "SELECT failed_count FROM pg_stat_archiver") > 0,
            60,
            "the archiver fails",
        )
        with connect(db) as conn:
            state = read_archiver(conn)
            row = conn.execute(ARCHIVE_SQL).fetchone()
        assert row is not None
        assert state.failing
        assert (pending_segments(state) or 0) >= 1
        lag = archive_lag_s(state)
        assert lag > 0
        assert row[-1] > 0  # the alert rule's value: the same rule in SQL
        # a status taken past the limit reports the stall
        strict = settings.backup.model_copy(update={"max_archive_lag_s": lag / 2})
        st = assess(backups, state, 0, strict)
        assert any("stalled" in p for p in st.problems), st.problems
        # the command an operator runs: exit 1, the stall and the unreadable repository
        monkeypatch.setenv("QILU_BACKUP__MAX_ARCHIVE_LAG_S", str(lag / 2))
        capsys.readouterr()
        assert cli.main(["backup", "status"]) == 1
        printed = capsys.readouterr().out
        assert "PROBLEM: WAL archiving stalled" in printed, printed
        assert "PROBLEM: the backup repository cannot be read" in printed, printed
        assert "last attempt FAILED" in printed, printed
        # the scheduler's metrics say so too
        strict_settings = settings.model_copy(update={"backup": strict})
        kinds = schedule_round(strict_settings, bk, frozenset())
        assert "WAL archiving stalled" in kinds, kinds
        assert REGISTRY.get_sample_value("qilu_backup_archive_failing") == 1
        problems = REGISTRY.get_sample_value("qilu_backup_problems")
        assert problems is not None
        assert problems >= 1
    finally:
        moved.rename(repo)
