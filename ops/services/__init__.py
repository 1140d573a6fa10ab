"""Local servers for development, tests and benchmarks, managed by ``qilu services``.

Kafka (KRaft, jars from Maven), PostgreSQL 15 and Mosquitto (Debian packages) and a
TimescaleDB test engine (PGlite over the wire protocol, from npm) run on loopback with all
their files under ``ServicesSettings.state_dir``. What is missing is installed on first use.

    from ops.services import Services
    services = Services(settings.services, settings.db)
    services.up()                      # idempotent; waits until every server answers
    services.kill("postgres")          # SIGKILL the server and its children (fault tests)
    services.start("postgres")         # and bring it back
    services.down()
"""

from ops.services.base import ProbeError, Server, ServiceStatus, State
from ops.services.manager import Services
from ops.services.registry import ALL_SERVICES, SERVER_TYPES

__all__ = [
    "ALL_SERVICES",
    "SERVER_TYPES",
    "ProbeError",
    "Server",
    "ServiceStatus",
    "Services",
    "State",
]
