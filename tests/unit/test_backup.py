"""The pure part of ops/backup.py: pgBackRest's configuration and commands, its info
output (tests/fixtures/pgbackrest_info.json, captured from pgBackRest 2.45 after a full and a
differential backup), the WAL archive lag, the schedule and the status verdict."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dashboards.model import SqlSpec
from ops.backup import (
    INCLUDE_LINE,
    BackupType,
    Layout,
    RestoreTarget,
    archive_conf,
    assess,
    due_backup,
    parse_info,
    pick_backup,
    render_config,
    restore_argv,
    with_include,
)
from ops.backup_cli import restore_target
from qilu.errors import ConfigError, ServiceError
from qilu.settings import BackupSettings, DatabaseSettings, ServicesSettings
from storage.restore_points import restore_point_name
from storage.wal_archive import (
    ARCHIVE_SQL,
    ArchiverState,
    archive_lag_s,
    pending_segments,
    segment_number,
)

INFO = (Path(__file__).parents[1] / "fixtures" / "pgbackrest_info.json").read_text()
NOW = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)


def layout(**backup: object) -> tuple[Layout, BackupSettings]:
    bs = BackupSettings(home=Path("/srv/bk"), **backup)  # type: ignore[arg-type]
    lay = Layout.of(bs, ServicesSettings(state_dir=Path("/srv/state")), DatabaseSettings())
    return lay, bs


def test_config_names_the_repository_retention_and_the_cluster() -> None:
    lay, bs = layout(repo_options={"repo1-type": "s3", "repo1-s3-bucket": "qilu-backups"})
    text = render_config(lay, bs)
    assert "[global]\nrepo1-path=/srv/bk/repo\n" in text
    assert "repo1-retention-full=2\nrepo1-retention-diff=6\n" in text
    assert "repo1-type=s3\nrepo1-s3-bucket=qilu-backups\n" in text
    assert "[qilu]\npg1-path=/srv/state/postgres/data\npg1-port=15432\n" in text
    assert "pg1-socket-path=/srv/state/postgres/run\n" in text


def test_a_socket_path_too_long_is_refused_with_the_key() -> None:
    lay, bs = layout()
    lay = Layout(lay.stanza, lay.home, lay.repo_path, lay.data_dir, "", lay.port)
    with pytest.raises(ConfigError, match=r"backup\.pg_socket_dir"):
        render_config(lay, bs)


def test_archiving_settings_push_every_segment_with_the_stanza() -> None:
    lay, bs = layout(archive_timeout_s=30)
    conf = archive_conf(lay, bs)
    assert "archive_mode = on\n" in conf
    assert (
        "archive_command = 'pgbackrest --config=/srv/bk/pgbackrest.conf --stanza=qilu "
        "archive-push %p'\n"
    ) in conf
    assert "archive_timeout = 30\n" in conf
    once = with_include("port = 5432\n")
    assert once.endswith(INCLUDE_LINE + "\n")
    assert with_include(once) == once


def test_restore_commands_for_a_time_a_point_and_the_end() -> None:
    lay, _ = layout()
    at = datetime(2026, 12, 6, 22, 5, 1, 250_000, tzinfo=UTC) + timedelta(hours=0)
    argv = restore_argv(lay, RestoreTarget(time=at), Path("/new"))
    assert argv[-1] == "restore"
    assert "--pg1-path=/new" in argv
    assert "--type=time" in argv
    assert "--target=2026-12-06 22:05:01.250000+00" in argv
    assert "--target-action=promote" in argv
    argv = restore_argv(lay, RestoreTarget(point="before-import"), Path("/new"), archive=False)
    assert "--type=name" in argv
    assert "--target=before-import" in argv
    assert "--archive-mode=off" in argv
    argv = restore_argv(lay, RestoreTarget(), Path("/new"))
    assert not any(a.startswith("--type") for a in argv)


def test_restore_targets_are_checked() -> None:
    with pytest.raises(ConfigError, match="zone"):
        RestoreTarget(time=datetime(2026, 12, 6, 12, 0))  # noqa: DTZ001 - the refused case
    with pytest.raises(ConfigError, match="not both"):
        RestoreTarget(time=NOW, point="x")
    with pytest.raises(ConfigError, match="restore point"):
        RestoreTarget(point="a b; rm")
    assert restore_point_name("migrate-058", NOW) == "qilu-migrate-058-20261206T140000Z"


def test_info_of_a_full_and_a_differential_backup() -> None:
    backups = parse_info(INFO, "qilu")
    assert [(b.label, b.type) for b in backups] == [
        ("20261206-143815F", BackupType.FULL),
        ("20261206-143815F_20261206-143822D", BackupType.DIFF),
    ]
    full = backups[0]
    assert full.database_bytes == 35_388_306
    assert full.repo_bytes == 6_314_719
    assert full.wal_start == "000000010000000000000002"
    assert full.stopped - full.started == timedelta(seconds=5)
    with pytest.raises(ServiceError, match="no stanza other"):
        parse_info(INFO, "other")
    doc = json.loads(INFO)
    doc[0]["status"] = {"code": 1, "message": "missing stanza path"}
    missing = json.dumps(doc)
    with pytest.raises(ServiceError, match="missing stanza path"):
        parse_info(missing, "qilu")
    # pgBackRest wants a stop time strictly earlier than the target, in whole seconds: a
    # target less than a second after a backup's stop cannot start from it
    assert pick_backup(backups, RestoreTarget(time=backups[1].stopped)) == backups[0]
    just_after = backups[1].stopped + timedelta(milliseconds=400)
    assert pick_backup(backups, RestoreTarget(time=just_after)) == backups[0]
    next_second = backups[1].stopped + timedelta(seconds=1)
    assert pick_backup(backups, RestoreTarget(time=next_second)) == backups[1]
    assert pick_backup(backups, RestoreTarget(time=backups[1].started)) == backups[0]
    assert pick_backup(backups, RestoreTarget(time=full.started)) is None


def state(**kw: object) -> ArchiverState:
    base: dict[str, object] = {
        "archived_count": 10,
        "last_archived_wal": "00000001000000000000000A",
        "last_archived_time": NOW - timedelta(seconds=30),
        "failed_count": 0,
        "last_failed_wal": None,
        "last_failed_time": None,
        "current_wal": "00000001000000000000000B",
        "started": NOW - timedelta(days=1),
        "now": NOW,
        "archive_mode": "on",
    }
    base.update(kw)
    return ArchiverState(**base)  # type: ignore[arg-type]


def test_segment_numbers_cross_the_log_file_boundary() -> None:
    assert segment_number("0000000100000001000000FF") == 511
    assert segment_number("000000020000000200000000") == 512
    assert segment_number("00000002.history") is None


def test_archive_lag_counts_only_while_segments_wait() -> None:
    assert archive_lag_s(state()) == 0.0  # only the current segment: nothing waits
    stalled = state(
        current_wal="00000001000000000000000E",
        failed_count=3,
        last_failed_wal="00000001000000000000000B",
        last_failed_time=NOW - timedelta(seconds=5),
        last_archived_time=NOW - timedelta(seconds=400),
    )
    assert pending_segments(stalled) == 3  # B, C and D; E is being written
    assert stalled.failing
    assert archive_lag_s(stalled) == 400.0
    # after a promotion the last file archived is the timeline history: the lag counts
    # while archiving fails, not otherwise
    history = state(last_archived_wal="00000002.history", current_wal="00000002000000000000000C")
    assert archive_lag_s(history) == 0.0
    failing = state(
        last_archived_wal="00000002.history",
        last_failed_time=NOW - timedelta(seconds=1),
        last_archived_time=NOW - timedelta(seconds=90),
    )
    assert archive_lag_s(failing) == 90.0
    assert archive_lag_s(state(archive_mode="off", current_wal="0000000100000000000000FF")) == 0


def test_status_flags_a_stall_an_old_backup_and_no_backup() -> None:
    backups = parse_info(INFO, "qilu")
    bs = BackupSettings(max_archive_lag_s=120, max_backup_age_h=26)
    at = backups[-1].stopped + timedelta(hours=1)
    healthy = assess(backups, state(now=at, last_archived_time=at), 7_000_000, bs)
    assert healthy.ok
    assert healthy.last_full == backups[0]
    assert healthy.last == backups[1]
    stalled = state(
        now=at, current_wal="00000001000000000000000D", last_archived_time=at - timedelta(minutes=3)
    )
    st = assess(backups, stalled, 0, bs)
    assert [p.split(":")[0] for p in st.problems] == ["WAL archiving stalled"]
    late = at + timedelta(hours=26)
    st = assess(backups, state(now=late, last_archived_time=late), 0, bs)
    assert st.problems == ["the last backup is 27.0 h old (limit 26 h)"]
    st = assess([], state(archive_mode="off"), 0, bs)
    assert len(st.problems) == 2


def test_the_schedule_takes_a_weekly_full_and_daily_differentials() -> None:
    backups = parse_info(INFO, "qilu")
    bs = BackupSettings(full_every_h=168, diff_every_h=24)
    assert due_backup([], NOW, bs) is BackupType.FULL
    last = backups[-1].started
    assert due_backup(backups, last + timedelta(hours=23), bs) is None
    assert due_backup(backups, last + timedelta(hours=24), bs) is BackupType.DIFF
    assert due_backup(backups, backups[0].started + timedelta(days=7), bs) is BackupType.FULL


def test_the_archive_alert_fires_within_five_minutes_of_a_stall() -> None:
    from dashboards import alerts
    from qilu.catalog import load_catalog

    spec = alerts.WAL_ARCHIVE_STALLED
    group = next(g for g in alerts.groups(load_catalog()) if spec in g.specs)
    assert spec.threshold == BackupSettings().max_archive_lag_s  # the status's own limit
    pending_s = int(spec.for_.removesuffix("m")) * 60
    # the lag passes the threshold, the next evaluation sees it, then it stays pending
    assert spec.threshold + group.interval_s + pending_s <= 300
    assert isinstance(spec.query, SqlSpec)
    assert ARCHIVE_SQL in spec.query.sql


def test_the_backup_metrics_of_dashboards_and_alerts_are_exported_by_the_scheduler() -> None:
    from prometheus_client import REGISTRY, generate_latest

    from dashboards.pipeline import METRICS
    from ops import backup_cli

    backup_cli.LAST_BACKUP.labels("any").set(1.0)
    exported = generate_latest(REGISTRY).decode()
    wanted = [m for m, component in METRICS.items() if component == "backup"]
    assert wanted
    for name in wanted:
        assert f"# TYPE {name} gauge" in exported


def test_restore_needs_a_target_or_latest() -> None:
    def target(**kw: object) -> RestoreTarget:
        args = argparse.Namespace(**({"to": None, "point": None, "latest": False} | kw))
        return restore_target(args)

    with pytest.raises(ConfigError, match="--latest for the end of the WAL archive"):
        target()
    with pytest.raises(ConfigError, match="not both"):
        target(latest=True, point="p1")
    assert target(latest=True) == RestoreTarget()
    assert target(point="p1") == RestoreTarget(point="p1")
    assert target(to="2026-12-06T14:05:00+08:00").time == datetime(2026, 12, 6, 6, 5, tzinfo=UTC)
