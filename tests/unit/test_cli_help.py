"""``--help`` texts a user reads before anything else: they say what the command does."""

from __future__ import annotations

import pytest
from edge_agent import __main__ as agent_main

from ops.cli import main


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    run = agent_main.main if argv[0] == "edge_agent" else main
    args = argv[1:] if argv[0] == "edge_agent" else argv
    with pytest.raises(SystemExit) as done:
        run(args)
    assert done.value.code == 0
    # argparse's line breaks do not matter (nor where it breaks a hyphenated word)
    return " ".join(capsys.readouterr().out.split()).replace("- ", "-")


def test_agents_update_says_it_is_audited_and_when_the_acls_and_the_ingest_follow(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_of(["agents", "update", "--help"], capsys)
    assert "audited" in text
    assert "ACLs are set to the sectors of the resulting sites before the command returns" in (
        text.replace("WRITE ACLs", "ACLs")
    )
    assert "ingest.agents_refresh_s" in text


def test_deadletters_help_reads_as_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(["deadletters", "--help"], capsys)
    assert "``" not in text
    assert "qilu deadletters summary" in text
    assert "storage.deadletter_retention_days" in text


def test_operators_help_reads_as_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(["operators", "--help"], capsys)
    assert "``" not in text
    assert "qilu operators pull" in text
    assert "QILU_TCEC102__SECRET_KEY" in text
    link = help_of(["operators", "link", "--help"], capsys)
    assert "gives the operator's agent the sites of those piles" in link
    assert "foreign_site" in link


@pytest.mark.parametrize(
    "argv", [["agent", "check-config", "--help"], ["edge_agent", "check-config", "--help"]]
)
def test_check_config_says_plainly_that_it_contacts_nothing(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(argv, capsys)
    assert "Plain check-config does not contact the platform" in text
