"""qilu.fileio.write_atomic on a real folder: the one way the platform and the agent replace a
file others read (the OCPP transaction map, the Prometheus file_sd targets)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collectors.ocpp import collector as ocpp
from qilu import fileio
from stream import provisioning


def test_the_file_and_its_rename_are_fsynced_and_nothing_is_left_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "state" / "transactions.json"
    fileio.write_atomic(target, "one\n")
    fileio.write_atomic(target, "two\n")
    assert target.read_text(encoding="utf-8") == "two\n"
    assert [p.name for p in target.parent.iterdir()] == ["transactions.json"]
    # each time: the temporary file's data, then the folder (so the rename survives a power cut)
    assert [Path(p).parent == target.parent for p in synced] == [True, False] * 2
    assert synced[1] == str(target.parent)


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "targets.json"
    fileio.write_atomic(target, "[]\n")
    with pytest.raises(UnicodeEncodeError):
        fileio.write_atomic(target, "\ud800")  # a lone surrogate: not encodable as UTF-8
    assert target.read_text(encoding="utf-8") == "[]\n"
    assert [p.name for p in tmp_path.iterdir()] == ["targets.json"]


def test_the_agents_targets_and_the_ocpp_state_file_share_it() -> None:
    assert vars(provisioning)["write_atomic"] is fileio.write_atomic
    assert vars(ocpp)["write_atomic"] is fileio.write_atomic
