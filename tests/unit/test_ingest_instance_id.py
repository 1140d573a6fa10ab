"""Static group membership settings: the instance id is checked before any connection."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ops.cli import main
from qilu.settings import IngestSettings


def test_instance_id_accepts_kafka_characters_and_empty() -> None:
    assert IngestSettings(group_instance_id="ingest-host3.a_1").group_instance_id == (
        "ingest-host3.a_1"
    )
    assert IngestSettings().group_instance_id == ""  # dynamic membership by default


@pytest.mark.parametrize("bad", ["ingest 1", "ingest/1", "x" * 250, "ingest:1"])
def test_instance_id_refuses_what_kafka_would(bad: str) -> None:
    with pytest.raises(ValidationError, match="group_instance_id"):
        IngestSettings(group_instance_id=bad)


def test_ingest_command_refuses_a_bad_instance_id_before_connecting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert main(["ingest", "--instance-id", "ingest 1"]) == 2
    assert "ingest.group_instance_id (--instance-id)" in caplog.text
