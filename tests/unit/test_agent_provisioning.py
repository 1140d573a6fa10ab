"""The broker's SASL/ACL configuration and the provisioned agent configuration, without servers."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml
from edge_agent import config

from ops.services import render
from qilu import signing
from qilu.errors import ConfigError
from qilu.settings import KafkaSettings, ServicesSettings, Settings
from stream.provisioning import Credentials, agent_toml, file_sd, topics_for


def test_broker_has_an_internal_listener_and_a_scram_listener_with_acls() -> None:
    props = render.kafka_server_properties(
        host="127.0.0.1", port=1, controller_port=2, agent_port=3, log_dir=Path("/d")
    )
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2,AGENTS://127.0.0.1:3"
    )
    assert "AGENTS:SASL_PLAINTEXT" in str(props["listener.security.protocol.map"])
    assert props["listener.name.agents.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert str(props["authorizer.class.name"]).endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:ANONYMOUS"  # the loopback-only internal listener
    plain = render.kafka_server_properties(
        host="127.0.0.1", port=1, controller_port=2, log_dir=Path("/d")
    )
    assert "authorizer.class.name" not in plain


def test_agent_port_defaults_next_to_the_broker_port() -> None:
    assert ServicesSettings().kafka_agent_port == 19094
    assert ServicesSettings(kafka_port=30000).kafka_agent_port == 30002
    assert ServicesSettings(kafka_port=30000, kafka_agent_port=5).kafka_agent_port == 5


def test_provisioned_configuration_is_a_valid_agent_configuration() -> None:
    settings = Settings(kafka=KafkaSettings(agent_bootstrap="gw.example:9094", topic_prefix="p"))
    key = signing.generate_key()
    text = agent_toml(settings, Credentials("gw-1", 3, key.private_b64, "s3cret"))
    table = tomllib.loads(text)
    table["collectors"] = {"sim": {"type": "simulated", "sites": ["S1"]}}
    cfg = config.parse(table, environ={})
    assert cfg.agent.id == "gw-1"
    assert cfg.kafka.bootstrap == "gw.example:9094"
    assert cfg.kafka_security() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "gw-1",
        "sasl_plain_password": "s3cret",
    }
    assert (cfg.auth.key_no, cfg.auth.signing_key) == (3, key.private_b64)
    assert topics_for(settings.kafka, ["ranch", "charging"]) == [
        "p.readings.ranch",
        "p.readings.charging",
    ]


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"auth": {"key_no": 1}}, "auth"),
        ({"auth": {"key_no": 1, "signing_key": "AAAA"}}, "auth.signing_key"),
        ({"kafka": {"security_protocol": "SASL_PLAINTEXT"}}, "kafka.sasl_username"),
        (
            {"kafka": {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "a"}},
            "kafka.sasl_password",
        ),
    ],
)
def test_incomplete_credentials_name_the_key(patch: dict, key: str) -> None:  # type: ignore[type-arg]
    table = {"agent": {"id": "a"}, "collectors": {"s": {"type": "simulated"}}, **patch}
    with pytest.raises(ConfigError) as err:
        config.parse(table, environ={})
    assert err.value.key == key


def test_a_broker_config_from_an_older_version_is_out_of_date(tmp_path: Path) -> None:
    from ops.services import Services
    from qilu.settings import DatabaseSettings

    kafka = Services(ServicesSettings(state_dir=tmp_path), DatabaseSettings()).server("kafka")
    assert not kafka.config_current()  # never configured
    props = kafka.home / "server.properties"
    props.parent.mkdir(parents=True)
    props.write_text(kafka.rendered_properties())  # type: ignore[attr-defined]
    assert kafka.config_current()
    props.write_text(props.read_text().replace(",AGENTS://127.0.0.1:19094", ""))
    assert not kafka.config_current()


def test_file_sd_lists_each_agent_and_the_province_endpoint() -> None:
    groups = file_sd([("gw-1", "10.0.0.7", 9103), ("gw-2", "fd00::7", 9104)], ("127.0.0.1", 9102))
    assert groups == [
        {"targets": ["10.0.0.7:9103"], "labels": {"agent_id": "gw-1"}},
        {"targets": ["[fd00::7]:9104"], "labels": {"agent_id": "gw-2"}},
        {"targets": ["127.0.0.1:9102"], "labels": {"agent_id": "province"}},
    ]
    assert file_sd([], None) == []  # no agents: an empty list, which Prometheus accepts


def test_provisioned_configuration_carries_its_own_metrics_endpoint() -> None:
    """The scrape address recorded at provisioning (file_sd) is not what the agent binds: a
    gateway behind NAT cannot bind the router's address, so a remote agent binds every
    interface on its port; an agent on the platform's machine keeps its loopback address."""
    key = signing.generate_key()
    every = "0.0.0.0"  # noqa: S104 - what the configuration must say, not a bind here
    binds = {"10.0.0.7": every, "203.0.113.9": every, "gw-7.example.cn": every,
             "fd00::7": "::", "127.0.0.1": "127.0.0.1", "::1": "::1"}  # fmt: skip
    for scrape, bind in binds.items():
        creds = Credentials("gw-1", 1, key.private_b64, None, scrape, 9105)
        text = agent_toml(Settings(), creds)
        table = tomllib.loads(text)
        table["collectors"] = {"sim": {"type": "simulated", "sites": ["S1"]}}
        cfg = config.parse(table, environ={})
        assert (cfg.agent.metrics_host, cfg.agent.metrics_port) == (bind, 9105)
        shown = f"[{scrape}]" if ":" in scrape else scrape
        assert f"# Prometheus scrapes {shown}:9105 " in text


def test_local_prometheus_reads_the_agents_file_the_platform_writes(tmp_path: Path) -> None:
    from ops.services.base import Context
    from ops.services.prometheus import Prometheus, agent_targets_file
    from ops.services.tools import Apt
    from qilu.settings import REPO_ROOT, DatabaseSettings

    source = (REPO_ROOT / "infra" / "prometheus" / "prometheus.yml").read_text()
    rendered = yaml.safe_load(render.prometheus_config(source))
    (job,) = [j for j in rendered["scrape_configs"] if j["job_name"] == "qilu-agents"]
    assert "static_configs" not in job  # no fixed port list
    (files,) = [sd["files"] for sd in job["file_sd_configs"]]
    server = Prometheus(
        Context(ServicesSettings(state_dir=tmp_path), DatabaseSettings()), Apt(tmp_path / "apt")
    )
    # Prometheus resolves the relative path against the folder of the file it runs
    assert [server.config_file.parent / f for f in files] == [agent_targets_file(tmp_path)]
    server.configure(lambda _msg: None)
    assert yaml.safe_load(server.config_file.read_text()) == rendered
    assert json.loads(agent_targets_file(tmp_path).read_text()) == []
    with pytest.raises(ValueError, match="agents"):
        render.prometheus_config("scrape_configs: []\n")
