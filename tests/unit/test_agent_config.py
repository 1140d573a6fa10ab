"""The agent's TOML configuration: defaults, environment overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from edge_agent import config
from edge_agent.__main__ import main as lean_main
from edge_agent.runtime import build_collectors, describe

from qilu import signing
from qilu.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "edge-agent" / "agent.sample.toml"
MINIMAL = {
    "agent": {"id": "a1"},
    "auth": {"unsigned": True},
    "collectors": {"r": {"type": "mqtt"}},
}
# the sample keeps its two secrets out of the file: they come from the environment
SECRETS = {
    "QILU_EDGE__KAFKA__SASL_PASSWORD": "pw",
    "QILU_EDGE__AUTH__SIGNING_KEY": signing.generate_key().private_b64,
}


def test_sample_file_is_valid_and_builds_every_collector() -> None:
    cfg = config.load(SAMPLE, environ=SECRETS)
    assert cfg.agent.id == "agent-substation-370100-0029"
    assert cfg.buffer.fsync == "batch"
    assert [c.type_name for c in build_collectors(cfg)] == ["modbus", "ocpp", "mqtt"]
    # no fixed metrics port (9102 is the simulated province's; provisioning assigns one)
    assert cfg.agent.metrics_port == 0
    piles = cfg.collectors["piles"]
    assert (piles["authorization"], len(piles["id_tags"])) == ("allow_list", 2)
    assert cfg.buffer.quarantine_max_share == 0.25
    text = SAMPLE.read_text(encoding="utf-8")
    for sector in ("sector substation", "sector charging", "sector ranch"):
        assert sector in text  # which sites the agent needs for its three collectors


@pytest.mark.parametrize("share", [0, 0.95])
def test_the_quarantine_share_is_bounded(share: float) -> None:
    table = {**MINIMAL, "buffer": {"quarantine_max_share": share}}
    with pytest.raises(ConfigError) as err:
        config.parse(table, environ={})
    assert err.value.key == "buffer.quarantine_max_share"


def test_sample_is_the_secure_configuration() -> None:
    """The agents' SASL listener and a signing key, as `qilu agents provision` writes them."""
    cfg = config.load(SAMPLE, environ=SECRETS)
    assert cfg.kafka.security_protocol == "SASL_PLAINTEXT"
    assert cfg.kafka.sasl_username == cfg.agent.id
    assert cfg.auth.key_no == 1
    assert not cfg.auth.unsigned
    with pytest.raises(ConfigError) as err:  # without its secrets it is refused, by name
        config.load(
            SAMPLE,
            environ={"QILU_EDGE__AUTH__SIGNING_KEY": SECRETS["QILU_EDGE__AUTH__SIGNING_KEY"]},
        )
    assert err.value.key == "kafka.sasl_password"
    with pytest.raises(ConfigError) as err:
        config.load(SAMPLE, environ={"QILU_EDGE__KAFKA__SASL_PASSWORD": "pw"})
    assert err.value.key == "auth"


def test_unsigned_needs_the_named_opt_out(capsys: pytest.CaptureFixture[str]) -> None:
    """No key and no opt-out: refused (the platform would dead-letter every envelope as
    `unsigned` while the agent counted them as sent)."""
    table = {"agent": {"id": "a1"}, "collectors": {"r": {"type": "mqtt"}}}
    with pytest.raises(ConfigError) as err:
        config.parse(table, environ={})
    assert err.value.key == "auth"
    assert "unsigned = true" in err.value.problem
    cfg = config.parse({**table, "auth": {"unsigned": True}}, environ={})
    summary = "\n".join(describe(cfg, build_collectors(cfg)))
    assert "UNSIGNED (auth.unsigned = true" in summary
    key = signing.generate_key().private_b64
    with pytest.raises(ConfigError) as err:
        config.parse(
            {**table, "auth": {"unsigned": True, "key_no": 1, "signing_key": key}}, environ={}
        )
    assert err.value.key == "auth.unsigned"
    del capsys


def test_environment_overrides_the_file_with_typed_values() -> None:
    env = {
        "QILU_EDGE__KAFKA__BOOTSTRAP": "k1:9092,k2:9092",
        "QILU_EDGE__BUFFER__MAX_BYTES": "536870912",
        "QILU_EDGE__DELIVERY__BACKLOG_RATE": "2000",
        "QILU_EDGE__COLLECTORS__SUB_RTU__HOST": "10.20.0.5",
        "QILU_OTHER": "ignored",
        **SECRETS,
    }
    cfg = config.load(SAMPLE, environ=env)
    assert cfg.kafka.bootstrap == "k1:9092,k2:9092"
    assert cfg.buffer.max_bytes == 536_870_912
    assert cfg.delivery.backlog_rate == 2000.0
    assert cfg.collectors["sub_rtu"]["host"] == "10.20.0.5"


@pytest.mark.parametrize(
    ("table", "env", "key"),
    [
        ({"collectors": {"r": {"type": "mqtt"}}}, {}, "agent.id"),
        ({"agent": {"id": "a b"}, "collectors": {"r": {"type": "mqtt"}}}, {}, "agent.id"),
        ({**MINIMAL, "buffer": {"max_bytes": "big"}}, {}, "buffer.max_bytes"),
        ({**MINIMAL, "buffer": {"policy": "drop_random"}}, {}, "buffer.policy"),
        ({**MINIMAL, "buffer": {"fsync": "never"}}, {}, "buffer.fsync"),
        ({**MINIMAL, "delivery": {"batch_max_readings": 0}}, {}, "delivery.batch_max_readings"),
        ({**MINIMAL, "delivry": {}}, {}, "delivry"),
        ({**MINIMAL, "kafka": {"bootstrap": " "}}, {}, "kafka.bootstrap"),
        (MINIMAL, {"QILU_EDGE__AGENT__METRICS_PORT": "70000"}, "agent.metrics_port"),
        ({"agent": {"id": "a"}, "auth": {"unsigned": True}}, {}, "collectors"),
        ({**MINIMAL, "collectors": {"r": {"port": 1}}}, {}, "collectors.r.type"),
    ],
)
def test_errors_name_the_key(table: dict[str, object], env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse(table, environ=env)
    assert err.value.key == key


def test_unknown_collector_type_names_the_key() -> None:
    cfg = config.parse({**MINIMAL, "collectors": {"x": {"type": "zigbee"}}}, environ={})
    with pytest.raises(ConfigError) as err:
        build_collectors(cfg)
    assert err.value.key == "collectors.x.type"
    assert "mqtt" in err.value.problem  # lists the known types


def test_check_config_command_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        for k, v in SECRETS.items():
            mp.setenv(k, v)
        assert lean_main(["check-config", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "configuration OK" in out
    assert "signed with key 1" in out
    unsigned = tmp_path / "unsigned.toml"  # the old sample's way: no [auth] at all
    unsigned.write_text('[agent]\nid = "a"\n[collectors.m]\ntype = "mqtt"\n')
    assert lean_main(["check-config", str(unsigned)]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[agent]\nid = "a"\n[auth]\nunsigned = true\n[collectors.m]\ntype = "modbus"\nhost = ""\n'
    )
    assert lean_main(["check-config", str(bad)]) == 2
    broken = tmp_path / "broken.toml"
    broken.write_text("[agent\n")
    assert lean_main(["check-config", str(broken)]) == 2
