"""The edge agent's lean process: no server package on its path, kafka-python's package
``__init__`` deferred (edge_agent/lean.py), and nothing lost by deferring it.

Each check runs in a fresh interpreter (tests/edge_probe.py): this test process has imported
half the platform already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qilu import signing
from tests.edge_probe import SERVER_PACKAGES, SERVER_STAGES

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "tests" / "edge_probe.py"
SAMPLE = REPO / "edge-agent" / "agent.sample.toml"


def probe(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, str(PROBE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def fresh_python(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter; it must succeed. Returns its stripped output."""
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


@pytest.fixture(scope="module")
def sample_env() -> dict[str, str]:
    import os

    # the sample keeps its two secrets out of the file: they come from the environment
    return {
        **os.environ,
        "QILU_EDGE__KAFKA__SASL_PASSWORD": "pw",
        "QILU_EDGE__AUTH__SIGNING_KEY": signing.generate_key().private_b64,
    }


def test_the_agents_path_imports_no_server_package(sample_env: dict[str, str]) -> None:
    out = probe("build", str(SAMPLE), env=sample_env)
    held = set(out["modules"])
    assert {"edge_agent", "collectors", "kafka", "prometheus_client"} <= held  # it did run
    assert held.isdisjoint(SERVER_PACKAGES), sorted(held & set(SERVER_PACKAGES))
    assert held.isdisjoint(SERVER_STAGES), sorted(held & set(SERVER_STAGES))


def test_the_probe_sees_a_planted_server_import(sample_env: dict[str, str]) -> None:
    out = probe("build", str(SAMPLE), "--also", "api.app", env=sample_env)
    assert {"fastapi", "api"} <= set(out["modules"])


def test_a_running_agent_defers_kafkas_init_and_imports_no_server_package(
    tmp_path: Path,
) -> None:
    # the real `python -m edge_agent run` for 4 s, with no broker and no MQTT broker there
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        '[agent]\nid = "probe"\nmetrics_port = 0\n[kafka]\nbootstrap = "127.0.0.1:1"\n'
        f'[auth]\nunsigned = true\n[buffer]\npath = "{tmp_path / "buf.db"}"\n'
        '[collectors.m]\ntype = "mqtt"\nport = 1\n'
    )
    out = probe("run", str(cfg), "4")
    assert out["rc"] == 0
    held = set(out["modules"])
    assert "kafka" in held  # the producer was built
    assert out["kafka_deferred"] is True
    assert out["crc32c_deferred"] is True
    assert out["importlib_metadata"] is False  # crc32c's version lookup stayed out
    # kafka-python's schemas were read without importlib.resources' package (zipfile, tempfile)
    assert out["resources_modules"] == []
    assert out["argparse"] is False  # the unit's command line, read without argparse
    # its MQTT collector's paho-mqtt imports urllib.request: registered, never run
    assert out["urllib_request_deferred"] is True
    assert out["http_client"] is False
    assert held.isdisjoint(SERVER_PACKAGES), sorted(held & set(SERVER_PACKAGES))
    assert held.isdisjoint(SERVER_STAGES), sorted(held & set(SERVER_STAGES))


def test_kafkas_deferred_init_loads_the_producer_alone_and_the_rest_on_demand() -> None:
    # the admin client and the consumer are not loaded for a producer
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from edge_agent import lean\n"
        "assert lean.defer_kafka_init()\n"
        "from kafka import KafkaProducer, errors\n"
        "from kafka.net.compat import KafkaNetClient\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('kafka.admin', "
        "'kafka.consumer', 'kafka.coordinator')))\n"
        "assert loaded == [], loaded\n"
        "assert lean.kafka_init_deferred()\n"
        "assert KafkaProducer.__module__ == 'kafka.producer.kafka'\n"
        "assert errors.KafkaError\n"
        # the rest of the package is there when asked for, unchanged
        "from kafka import KafkaConsumer, TopicPartition\n"
        "import kafka\n"
        "assert not lean.kafka_init_deferred()\n"
        "assert kafka.KafkaAdminClient.__module__ == 'kafka.admin.client'\n"
        "assert kafka.__version__\n"
        "assert lean.defer_kafka_init() is False  # imported already: left alone\n"
        "print('ok')\n"
    )
    assert fresh_python(code) == "ok"


def test_the_producers_connection_loads_one_admin_and_one_consumer_protocol_module() -> None:
    # kafka/protocol/broker_version_data.py imports kafka.protocol.admin and .consumer for the
    # probes of brokers older than 0.10: only the two modules defining those classes load
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from edge_agent import lean\n"
        "assert lean.defer_kafka_init()\n"
        "from kafka.net.compat import KafkaNetClient\n"
        "from kafka.protocol.broker_version_data import VERSION_CHECKS\n"
        "prefixes = ('kafka.protocol.admin', 'kafka.protocol.consumer')\n"
        "print(sorted(m for m in sys.modules if m.startswith(prefixes)))\n"
        "print(sorted(type(r).__name__ for _, r in VERSION_CHECKS))\n"
        # the rest of either package when asked for, by name, star or attribute, unchanged
        "from kafka.protocol.admin import CreateTopicsRequest\n"
        "from kafka.protocol.consumer import *\n"
        "import kafka.protocol\n"
        "assert kafka.protocol.admin is sys.modules['kafka.protocol.admin']\n"
        "assert CreateTopicsRequest.__module__ == 'kafka.protocol.admin.topics'\n"
        "assert FetchRequest.__module__ == 'kafka.protocol.consumer.fetch'\n"
        "assert not lean.init_deferred('kafka.protocol.admin')\n"
        "assert not lean.init_deferred('kafka.protocol.consumer')\n"
        "print('ok')\n"
    )
    assert fresh_python(code).splitlines() == [
        "['kafka.protocol.admin', 'kafka.protocol.admin.groups', 'kafka.protocol.consumer', "
        "'kafka.protocol.consumer.group']",
        "['FindCoordinatorRequest', 'ListGroupsRequest', 'MetadataRequest', 'OffsetFetchRequest']",
        "ok",
    ]


def test_kafkas_schemas_are_read_without_importlib_resources_and_it_works_on_demand() -> None:
    # kafka-python 3.0.12 reads each protocol schema with importlib.resources.read_text
    # (kafka/protocol/schemas/load_json.py); lean.read_text serves those calls
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from edge_agent import lean\n"
        "lean.defer_all()\n"
        "from kafka import KafkaProducer\n"
        "from kafka.net.compat import KafkaNetClient\n"
        "from kafka.protocol.metadata import ApiVersionsRequest\n"
        "print(sorted(m for m in sys.modules if m.startswith(('importlib.re', 'zipfile', "
        "'tempfile'))))\n"
        "print(lean.init_deferred('importlib.resources'))\n"
        "from kafka.protocol.schemas import load_json\n"
        "light = load_json('ApiVersionsRequest')\n"
        "assert light['apiKey'] == 18 and light['fields'], light\n"
        "assert ApiVersionsRequest.API_KEY == 18\n"
        # a call the light reader does not serve (a module object) runs the real package
        "import kafka.protocol.schemas.resources as res\n"
        "import importlib.resources\n"
        "text = importlib.resources.read_text(res, 'ApiVersionsRequest.json')\n"
        "print(lean.init_deferred('importlib.resources'))\n"
        "assert importlib.resources.read_text.__module__ != 'edge_agent.lean'\n"
        "assert load_json('ApiVersionsRequest') == light and '\"apiKey\": 18' in text\n"
        "assert importlib.resources.files(res).joinpath('ApiVersionsRequest.json').is_file()\n"
        "print('ok')\n"
    )
    assert fresh_python(code).splitlines() == ["['importlib.resources']", "True", "False", "ok"]


def test_paho_mqtt_loads_without_running_urllib_request_and_it_works_on_demand() -> None:
    # paho-mqtt 2.1 imports urllib.request at the top and reads it only with PySocks installed
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from edge_agent import lean\n"
        "lean.defer_all()\n"
        "from paho.mqtt import client as mqtt\n"
        "c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)\n"
        "print(c._get_proxy(), lean.init_deferred('urllib.request'))\n"
        "print(sorted(m for m in ('http.client', 'email') if m in sys.modules))\n"
        "import urllib.request\n"
        "from urllib.request import Request\n"
        "assert Request('http://h/').host == 'h'\n"
        "assert isinstance(urllib.request.getproxies(), dict)\n"
        "print(lean.init_deferred('urllib.request'), 'http.client' in sys.modules)\n"
        "print(lean.defer_urllib_request())  # imported already: left alone\n"
    )
    assert fresh_python(code).splitlines() == ["None True", "[]", "False True", "False"]


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--config", "/etc/qilu-agent/agent.toml"],
        ["--log-level", "WARNING", "run", "--config", "agent.toml"],
        ["--log-level", "run", "run", "--config", "run"],
    ],
)
def test_the_units_command_line_reads_as_argparse_reads_it(argv: list[str]) -> None:
    from edge_agent.__main__ import parse, unit_command

    fast = unit_command(argv)
    assert fast is not None
    assert vars(fast) == vars(parse(argv))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", "--config"],
        ["run", "--config=agent.toml"],
        ["run", "--conf", "agent.toml"],
        ["run", "--config", "-h"],
        ["run", "--config", ""],
        ["run", "--config", "a.toml", "--help"],
        ["--log-level", "-h", "run", "--config", "a.toml"],
        ["check-config", "agent.toml"],
        ["requeue-quarantine", "--config", "agent.toml"],
    ],
)
def test_any_other_command_line_goes_to_argparse(argv: list[str]) -> None:
    from edge_agent.__main__ import unit_command

    assert unit_command(argv) is None


def test_the_benchmarks_rate_collector_adds_nothing_to_the_agents_imports() -> None:
    # bench/edge_footprint.py measures the agent with bench/edge_support.py's collector loaded
    # in it: that module must not bring what the agent would not load (urllib.request with
    # http.client and the email package was ~3 MB of the measured RSS)
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        f"sys.path.insert(0, {str(REPO / 'bench')!r})\n"
        "import edge_support\n"
        "print(sorted(m for m in ('urllib.request', 'http.client', 'email', 'argparse') "
        "if m in sys.modules))\n"
    )
    assert fresh_python(code) == "[]"


def test_the_iec104_collector_loads_without_pydantic() -> None:
    # a substation's agent reads its point tables with qilu.inventory's CSV reader; the target
    # catalog (pydantic models, ~9 MB of RSS with their schemas) is for the platform's imports
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "import collectors.iec104.collector, qilu.pointtable, qilu.inventory, qilu.registry\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'qilu.catalog'))))\n"
    )
    assert fresh_python(code) == "[]"


def test_qilu_agent_commands_go_without_the_platforms_settings(
    sample_env: dict[str, str],
) -> None:
    # `qilu agent check-config` (and run, requeue-quarantine) runs on an edge install, which
    # holds no pydantic (tests/integration/test_edge_install.py): the platform's settings are
    # not built for them, so a platform setting the agent does not use (here one the settings
    # refuse) does not stop it
    env = {**sample_env, "QILU_ENV": "production"}  # the development db password: refused
    code = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "from ops.cli import main\n"
        f"print(main(['agent', 'check-config', {str(SAMPLE)!r}]))\n"
    )
    assert fresh_python(code, env=env).splitlines()[-1] == "0"
    # a platform command still builds them, and refuses the same environment
    r = subprocess.run(
        [sys.executable, "-c", "from ops.cli import main\nraise SystemExit(main(['ingest']))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert r.returncode == 2
    assert "db.password" in r.stderr


def test_crc32cs_deferred_init_gives_kafka_the_c_function_and_the_rest_on_demand() -> None:
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from edge_agent import lean\n"
        "assert lean.defer_crc32c_init()\n"
        "from kafka.record.util import calc_crc32c\n"
        "import crc32c._crc32c as c\n"
        "assert calc_crc32c.__defaults__[0] is c.crc32c  # the C function, not the Python one\n"
        "assert calc_crc32c(memoryview(b'123456789')) == 0xE3069283  # the check value\n"
        "assert 'importlib.metadata' not in sys.modules and lean.init_deferred('crc32c')\n"
        "import crc32c\n"
        "assert crc32c.__version__ and not lean.init_deferred('crc32c')\n"
        "print('ok')\n"
    )
    assert fresh_python(code) == "ok"


def test_ascii_host_names_are_encoded_without_encodings_idna_and_the_rest_by_it() -> None:
    # CPython encodes a str host name with the idna codec in getaddrinfo and in ssl's
    # server_hostname (kafka-python's connection does both): an ASCII name needs no module
    code = (
        "import sys, socket, ssl, codecs\n"
        "from edge_agent import lean\n"
        "assert lean.defer_all() is None and 'encodings.idna' not in sys.modules\n"
        "socket.getaddrinfo('localhost', 9092)\n"
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
        "tls = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname='broker-1.example')\n"
        "assert tls.server_hostname == 'broker-1.example'\n"
        "assert 'example.org.'.encode('idna') == b'example.org.'\n"
        "print(sorted(m for m in ('encodings.idna', 'stringprep', 'unicodedata') "
        "if m in sys.modules))\n"
        # a name the real codec must see: it is imported then, and answers
        "print('bücher.example'.encode('idna'), 'encodings.idna' in sys.modules)\n"
        "print(b'xn--bcher-kva.example'.decode('idna'))\n"
        "print(ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname='bücher.example')"
        ".server_hostname)\n"
        "print(lean.defer_idna())  # imported already: left alone\n"
    )
    assert fresh_python(code).splitlines() == [
        "[]",
        "b'xn--bcher-kva.example' True",
        "bücher.example",
        "xn--bcher-kva.example",
        "False",
    ]


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "broker-1.kafka.example",
        "example.org.",
        "127.0.0.1",
        "::1",
        "a" * 63 + ".example",
        "a" * 64 + ".example",
        "example." + "b" * 64,
        "a..b",
        ".example",
        "example..",
        ".",
        "",
        "UPPER.Example",
        "under_score.example",
        "bücher.example",
        "xn--bcher-kva.example",
        "例え.テスト",
    ],
)
def test_the_light_idna_encoder_answers_as_the_real_codec(name: str) -> None:
    import encodings.idna

    from edge_agent import lean

    real = encodings.idna.Codec()
    try:
        want: object = real.encode(name)
    except UnicodeError as e:
        want = (type(e), str(e))
    try:
        got: object = lean.idna_encode(name)
    except UnicodeError as e:
        got = (type(e), str(e))
    assert got == want
    with pytest.raises(UnicodeError):  # IDNA has no other error handling: the real says so
        lean.idna_encode(name, "replace")


def test_kafkas_connection_loads_the_configured_sasl_mechanism_alone_and_the_rest_on_demand() -> (
    None
):
    # kafka-python 3.0.12: kafka/net/sasl/__init__.py imports every mechanism (GSSAPI, MSK
    # IAM, OAuth, SSPI...) and kafka/net/__init__.py the SOCKS5 and HTTP CONNECT proxies
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from edge_agent import lean\n"
        "lean.defer_all()\n"
        "from kafka import KafkaProducer\n"
        "from kafka.net.compat import KafkaNetClient\n"
        "from kafka.net import connection\n"
        "def held():\n"
        "    return sorted(m for m in sys.modules if m.startswith('kafka.net.sasl') "
        "or m in ('kafka.net.socks5', 'kafka.net.http_connect'))\n"
        "print(held())\n"
        # what the agent configures (SCRAM-SHA-512), and PLAIN: their own modules, working
        "scram = connection.get_sasl_mechanism('SCRAM-SHA-512')\n"
        "m = scram(sasl_plain_username='u', sasl_plain_password='p', "
        "sasl_mechanism='SCRAM-SHA-512')\n"
        "assert m.auth_bytes().startswith(b'n,,n=u,r='), m.auth_bytes()\n"
        "plain = connection.get_sasl_mechanism('PLAIN')\n"
        "p = plain(sasl_plain_username='u', sasl_plain_password='p')\n"
        "assert p.auth_bytes() == b'u\\x00u\\x00p'\n"
        "print(held(), lean.init_deferred('kafka.net.sasl'), lean.init_deferred('kafka.net'))\n"
        # any other mechanism runs the package's init, whose registry answers from then on
        "print(connection.get_sasl_mechanism('OAUTHBEARER').__name__, "
        "lean.init_deferred('kafka.net.sasl'))\n"
        "from kafka.net.sasl import register_sasl_mechanism\n"
        "register_sasl_mechanism('X-TEST', plain)\n"
        "assert connection.get_sasl_mechanism('X-TEST') is plain\n"
        "assert connection.get_sasl_mechanism('SCRAM-SHA-512') is scram\n"
        "import kafka.net\n"
        "print(kafka.net.Socks5Proxy.__module__, lean.init_deferred('kafka.net'))\n"
    )
    assert fresh_python(code).splitlines() == [
        "['kafka.net.sasl']",
        "['kafka.net.sasl', 'kafka.net.sasl.abc', 'kafka.net.sasl.plain', "
        "'kafka.net.sasl.scram'] True True",
        "SaslMechanismOAuth False",
        "kafka.net.socks5 False",
    ]


def test_locale_stays_unrun_on_the_agents_path_and_works_on_demand() -> None:
    # subprocess (asyncio imports it) imports locale at the top for a child process's text
    # pipes, which an agent does not open (edge_agent/lean.py ON_FIRST_USE)
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from edge_agent import lean\n"
        "lean.defer_all()\n"
        "import asyncio, ssl, sqlite3, subprocess, logging\n"
        "import edge_agent.runtime, edge_agent.metrics, edge_agent.kafka_io\n"
        "from kafka import KafkaProducer\n"
        "from kafka.net.compat import KafkaNetClient\n"
        "logging.getLogger('x').error('boom', exc_info=ValueError('v'))\n"  # a traceback
        "print(lean.init_deferred('locale'))\n"
        "out = subprocess.run([sys.executable, '-c', 'print(1)'], capture_output=True, "
        "text=True, check=True).stdout\n"
        "import locale\n"
        "assert locale.getencoding()\n"
        "print(lean.init_deferred('locale'), out.strip())\n"
    )
    assert fresh_python(code).splitlines() == ["True", "False 1"]
