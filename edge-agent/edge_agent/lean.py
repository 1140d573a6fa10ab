"""Keeping the agent's process small on a Pi: two packages whose ``__init__`` loads much that
an agent never uses, registered without running it (``python -m edge_agent`` does this first).

- kafka-python 3.0.12 (pinned in pyproject.toml): ``kafka/__init__.py`` imports the admin
  client, the consumer and the group coordinator with their protocol schemas; an agent only
  produces (:data:`PRODUCER_NAMES`). About 1.2-1.7 MB of RSS. And the producer's connection
  (``kafka/protocol/broker_version_data.py``) imports the packages ``kafka.protocol.admin``
  and ``kafka.protocol.consumer``, every admin and consumer request and response class built
  from its JSON schema, for one request of each: the probes of brokers older than 0.10, which
  have no ApiVersions (``VERSION_CHECKS``); their package inits are deferred too
  (:data:`PROTOCOL_PROBE_NAMES`: only the modules defining those two load). About 1.5 MB.
- kafka-python 3.0.12's ``kafka/net/__init__.py`` imports the connection's proxies (SOCKS5,
  HTTP CONNECT) the agent never configures, and ``kafka/net/sasl/__init__.py`` imports and
  registers every SASL mechanism (GSSAPI, AWS MSK IAM, OAUTHBEARER, SSPI, PLAIN, SCRAM) for
  ``get_sasl_mechanism``, the one name the connection takes from it; the agent uses
  SCRAM-SHA-512 (edge_agent/config.py). Both inits are deferred too: :func:`get_sasl_mechanism`
  loads the module of a PLAIN or SCRAM mechanism (:data:`SASL_MECHANISMS`) alone and runs
  the real init for any other name (or once anything else of the package is asked for,
  e.g. ``register_sasl_mechanism``), whose registry answers from then on. About 0.13 MB.
- prometheus-client 0.26: ``prometheus_client/__init__.py`` imports its exposition module,
  which imports an HTTP server, WSGI and urllib; the agent needs the metric classes, the
  registry and the process collectors (:data:`PROMETHEUS_NAMES`) and renders what Prometheus
  asks for with ``prometheus_client.openmetrics.exposition`` (edge_agent/metrics.py). About
  1 MB of RSS.
- the standard library's ``importlib.resources`` (Python 3.11): kafka-python 3.0.12 reads each
  protocol schema with ``importlib.resources.read_text(package, name)``
  (``kafka/protocol/schemas/load_json.py``), and that package's ``__init__`` imports tempfile
  and, through the file reader, zipfile, for plain files of an installed package. Deferred with
  :func:`read_text` (:data:`RESOURCES_NAMES`): a plain file next to the package's
  ``__init__`` is read directly; anything else (another signature, a zipped package, another
  name) runs the real ``__init__``. About 0.6 MB.
- the standard library's ``urllib.request`` (with http.client and the email package): paho-mqtt
  2.1's client imports it at the top for one use, the proxy settings of a connection, which it
  reads only when PySocks is installed (``_get_proxy``; the edge install has no PySocks).
  Registered without running it, as the packages above (:func:`defer_urllib_request`; the
  standard library's ``importlib.util.LazyLoader`` does not do: the next ``import`` statement
  of the module reads its ``__spec__``, which loads it): the first use of any of its names
  runs it. About 1.4 MB for an agent with an MQTT collector.
- crc32c 2.9 (kafka-python's C CRC-32C): ``crc32c/__init__.py`` imports importlib.metadata
  (and with it the email package) for its version string and argparse for its command line;
  kafka-python takes the ``crc32c`` function only (:data:`CRC32C_NAMES`). About 1.2 MB.
- the standard library's ``locale``: ``subprocess`` (which asyncio imports) imports it at the
  top and reads it only for a child process's text pipes. Registered without running it the
  same way (:data:`ON_FIRST_USE`). About 0.15 MB.
- the standard library's ``encodings.idna`` (Python 3.11; with stringprep and the unicodedata
  extension): CPython encodes a host name given as a string with the ``idna`` codec, in
  ``socket.getaddrinfo`` and in ``ssl``'s ``server_hostname``, both inside kafka-python's
  connection. :func:`defer_idna` registers a codec search function that answers ``idna``
  first: a name that is ASCII with every label 1-63 characters (the only case in which the
  real codec returns the name's ASCII bytes unchanged, as its own fast path does) is encoded
  without the module; anything else (a non-ASCII name, an empty or long label, another error
  handler, decoding, the incremental and stream codecs, whose classes are reached through
  factories) goes to the real ``encodings.idna``, imported then. About 0.15 MB.

A deferred package imports its submodules as usual (``kafka.producer``, ``kafka.errors``); the
names listed come from the submodule that defines them; the first access to any other name
(``from kafka import KafkaConsumer``) runs the real ``__init__`` then, so a process that later
needs the rest gets it unchanged. When a new version lays its package out differently,
re-check the lists against its ``__init__``: tests/unit/test_edge_lean.py and
tests/unit/test_agent_metrics_endpoint.py fail when a deferral stops working.
(bench/results/edge_footprint.json; docs/adr/0007-edge-delivery-and-identity.md)
"""

from __future__ import annotations

import codecs
import encodings
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path  # the agent loads it anyway (its config's paths)
from typing import Any

# name -> the submodule that defines it, for the names the agent's path takes from each
# package itself; any other name runs the package's real ``__init__``
PRODUCER_NAMES = {"KafkaProducer": "kafka.producer"}
# kafka-python's protocol packages the producer's connection imports for one class each
PROTOCOL_PROBE_NAMES = {
    "kafka.protocol.admin": {"ListGroupsRequest": "kafka.protocol.admin.groups"},
    "kafka.protocol.consumer": {"OffsetFetchRequest": "kafka.protocol.consumer.group"},
}
# kafka-python 3.0.12's SASL mechanisms an agent may configure -> "module:class"; any other
# runs kafka/net/sasl/__init__.py, which imports and registers them all
SASL = "kafka.net.sasl"
SASL_MECHANISMS = {
    "PLAIN": "kafka.net.sasl.plain:SaslMechanismPlain",
    "SCRAM-SHA-256": "kafka.net.sasl.scram:SaslMechanismScram",
    "SCRAM-SHA-512": "kafka.net.sasl.scram:SaslMechanismScram",
}


def get_sasl_mechanism(name: str) -> Any:
    """``kafka.net.sasl.get_sasl_mechanism`` as kafka-python's connection calls it: the class
    of a PLAIN or SCRAM mechanism from its own module while the package's init waits; any
    other name, or once the init has run, the package's own registry."""
    if name in SASL_MECHANISMS and init_deferred(SASL):
        module, _, cls = SASL_MECHANISMS[name].partition(":")
        return getattr(importlib.import_module(module), cls)
    sasl = sys.modules[SASL]
    sasl.__dict__.get("_qilu_run_init", lambda: None)()
    return sasl.__dict__["get_sasl_mechanism"](name)


SASL_NAMES: dict[str, str | Callable[..., Any]] = {"get_sasl_mechanism": get_sasl_mechanism}
PROMETHEUS_NAMES = {
    **dict.fromkeys(
        ("Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"), "prometheus_client.metrics"
    ),
    "CollectorRegistry": "prometheus_client.registry",
    "REGISTRY": "prometheus_client.registry",
    "PROCESS_COLLECTOR": "prometheus_client.process_collector",
    "ProcessCollector": "prometheus_client.process_collector",
    "PLATFORM_COLLECTOR": "prometheus_client.platform_collector",
    "PlatformCollector": "prometheus_client.platform_collector",
    "GC_COLLECTOR": "prometheus_client.gc_collector",
    "GCCollector": "prometheus_client.gc_collector",
}


CRC32C_NAMES = {
    "crc32c": "crc32c._crc32c",
    "crc32": "crc32c._crc32c",
    "big_endian": "crc32c._crc32c",
    "hardware_based": "crc32c._crc32c",
    "CRC32CHash": "crc32c._crc32hash",
}


RESOURCES = "importlib.resources"


def read_text(*args: Any, **kwargs: Any) -> str:
    """``importlib.resources.read_text(package, resource)`` as kafka-python calls it, for a
    plain file in a package's folder, without loading the ``importlib.resources`` package; any
    other call (a module object, more arguments, a zipped package, a missing file) runs the
    package's real ``__init__`` and its own ``read_text``."""
    extra = set(kwargs) - {"encoding", "errors"}
    if len(args) == 2 and all(isinstance(a, str) for a in args) and not extra:
        package, resource = args
        module = sys.modules.get(package) or importlib.import_module(package)
        origin = getattr(module, "__file__", None)
        path: Path | None = Path(origin).parent / resource if origin else None
        if path is not None and "/" not in resource and os.sep not in resource and path.is_file():
            encoding: str = kwargs.get("encoding", "utf-8")
            errors: str = kwargs.get("errors", "strict")
            return path.read_text(encoding=encoding, errors=errors)
    resources = sys.modules[RESOURCES]
    resources.__dict__.get("_qilu_run_init", lambda: None)()
    real: Callable[..., str] = resources.__dict__["read_text"]
    return real(*args, **kwargs)


RESOURCES_NAMES: dict[str, str | Callable[..., Any]] = {"read_text": read_text}


IDNA = "idna"
_LABEL_MAX = 63  # RFC 1034: a label is 1-63 octets


def _real_idna() -> Any:
    return importlib.import_module("encodings.idna")


def _ascii_name(name: str) -> bool:
    """Whether the real ``idna`` codec encodes ``name`` to its ASCII bytes unchanged: ASCII,
    not empty, every label 1-63 characters (a final dot allowed)."""
    if not name or not name.isascii():
        return False
    labels = name.split(".")
    if labels[-1] == "":  # "host." : the root's empty label
        labels.pop()
    return bool(labels) and all(0 < len(label) <= _LABEL_MAX for label in labels)


def idna_encode(name: str, errors: str = "strict") -> tuple[bytes, int]:
    """The ``idna`` codec's encoder: an ASCII host name without the module; anything else
    (and any error) from the real ``encodings.idna``."""
    if errors == "strict" and isinstance(name, str) and _ascii_name(name):
        return name.encode("ascii"), len(name)
    result: tuple[bytes, int] = _real_idna().Codec().encode(name, errors)
    return result


def _idna_decode(data: Any, errors: str = "strict") -> tuple[str, int]:
    result: tuple[str, int] = _real_idna().Codec().decode(data, errors)
    return result


def _idna_later(attr: str) -> Callable[..., Any]:
    def make(*args: Any, **kwargs: Any) -> Any:
        return getattr(_real_idna(), attr)(*args, **kwargs)

    make.__name__ = attr
    return make


def _idna_search(name: str) -> codecs.CodecInfo | None:
    if name != IDNA:
        return None
    return codecs.CodecInfo(
        name=IDNA,
        encode=idna_encode,
        decode=_idna_decode,
        incrementalencoder=_idna_later("IncrementalEncoder"),
        incrementaldecoder=_idna_later("IncrementalDecoder"),
        streamwriter=_idna_later("StreamWriter"),
        streamreader=_idna_later("StreamReader"),
    )


def defer_idna() -> bool:
    """Answer the ``idna`` codec's lookup before the standard library's search function (see
    the module docstring). False, doing nothing, when ``encodings.idna`` is imported already."""
    if "encodings.idna" in sys.modules:
        return False
    # search functions are asked in the order they were registered, the standard library's
    # first (at start-up): this one goes ahead of it. One registered before this call (none in
    # a plain interpreter: python -m edge_agent defers first thing) would now be asked before
    # the standard library's too. Unregistering clears the registry's cache of lookups.
    codecs.unregister(encodings.search_function)
    codecs.register(_idna_search)
    codecs.register(encodings.search_function)
    return True


def defer_all() -> None:
    """What ``python -m edge_agent`` does before anything imports these packages."""
    defer_idna()
    defer_resources_init()
    defer_on_first_use()
    defer_kafka_init()
    defer_prometheus_init()
    defer_crc32c_init()


def defer_resources_init() -> bool:
    """The same for the standard library's ``importlib.resources``: kafka-python's schema
    reads go through :func:`read_text`; tempfile and zipfile load only when something else
    asks for the package."""
    return _defer_init(RESOURCES, RESOURCES_NAMES)


# standard library modules registered without running them: module -> who imports it, for
# what (Python 3.11); the first use of any of their names runs them
ON_FIRST_USE = {
    "urllib.request": "paho-mqtt 2.1's client: a connection's proxy, read with PySocks only",
    "locale": "subprocess: the encoding of a child process's text pipes",
}


def defer_on_first_use() -> None:
    """Register the modules of :data:`ON_FIRST_USE` that are not imported yet."""
    for module in ON_FIRST_USE:
        _defer_init(module, {})


def defer_urllib_request() -> bool:
    """Register ``urllib.request`` without running it (see the module docstring): its first
    use of any name runs it. False, doing nothing, when it is imported already."""
    return _defer_init("urllib.request", {})


def defer_crc32c_init() -> bool:
    """The same for ``crc32c``: its C functions load, its version lookup and CLI do not."""
    return _defer_init("crc32c", CRC32C_NAMES)


def defer_kafka_init() -> bool:
    """Register the ``kafka`` package without running its ``__init__``, and the same for its
    protocol packages the producer uses one class of, ``kafka.net`` and ``kafka.net.sasl``
    (see the module docstring). False, doing nothing, when kafka-python is imported already
    or missing."""
    if not _defer_init("kafka", PRODUCER_NAMES):
        return False
    for package, names in PROTOCOL_PROBE_NAMES.items():
        _defer_init(package, names)
    _defer_init("kafka.net", {})  # its submodules load as usual; its proxies on demand
    _defer_init(SASL, SASL_NAMES)
    return True


def defer_prometheus_init() -> bool:
    """The same for ``prometheus_client``: its metric classes, registry and collectors load,
    its exposition (HTTP server, WSGI, urllib) only when something asks for it."""
    return _defer_init("prometheus_client", PROMETHEUS_NAMES)


def _defer_init(package: str, names: dict[str, str] | dict[str, str | Callable[..., Any]]) -> bool:
    if package in sys.modules:
        return False
    spec = importlib.util.find_spec(package)
    if spec is None or spec.loader is None:
        return False
    is_package = spec.submodule_search_locations is not None
    if not is_package and names:
        return False
    module = importlib.util.module_from_spec(spec)
    done = False
    lock = threading.RLock()  # one thread runs it; the others wait for it

    def run_init() -> None:
        nonlocal done
        with lock:
            if not done:
                done = True  # set first: the init's own imports must not run it again
                code = spec.loader.get_code(package)  # type: ignore[union-attr]
                exec(code, module.__dict__)  # noqa: S102 - the package's own __init__, deferred

    def package_getattr(name: str) -> Any:
        if name in names and not done:
            where = names[name]
            if callable(where):  # a light stand-in (:func:`read_text`)
                return where
            return getattr(importlib.import_module(where), name)
        if not done and is_package and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")  # ``from kafka import errors``
        run_init()
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    module.__getattr__ = package_getattr  # type: ignore[method-assign]
    module.__dict__["_qilu_init_deferred"] = lambda: not done
    module.__dict__["_qilu_run_init"] = run_init
    sys.modules[package] = module
    parent, _, child = package.rpartition(".")
    if parent:  # as the import system does: ``kafka.protocol.admin`` is ``kafka.protocol``'s
        setattr(sys.modules[parent], child, module)
    return True


def init_deferred(package: str) -> bool:
    """Whether ``package`` in this process still waits for its ``__init__``."""
    module = sys.modules.get(package)
    still = getattr(module, "__dict__", {}).get("_qilu_init_deferred")
    return bool(still and still())


def kafka_init_deferred() -> bool:
    """Whether the ``kafka`` package in this process still waits for its ``__init__``."""
    return init_deferred("kafka")
