"""What every collector is: validate (no I/O) -> connect (retryable) -> collect -> stop (drain).

A collector turns one source (a simulator, an OCPP endpoint, a Modbus RTU, an MQTT topic)
into :class:`qilu.contract.Reading` objects and hands them to the agent through a sink. It
never talks to Kafka or to the buffer itself.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence

from qilu.contract import Reading

ReadingSink = Callable[[Sequence[Reading]], Awaitable[None]]


class Collector(abc.ABC):
    """Base class of all collectors. Subclasses set ``type_name``."""

    type_name: str = ""

    def __init__(self, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    def validate(self) -> None:
        """Check the configuration without any I/O; raise ConfigError naming the key."""

    async def connect(self) -> None:  # noqa: B027 - optional phase, default does nothing
        """Open connections or listeners. Raise RetryableError on transient failure."""

    @abc.abstractmethod
    async def collect(self, sink: ReadingSink) -> None:
        """Produce readings into ``sink`` until cancelled."""

    async def stop(self) -> None:  # noqa: B027 - optional phase, default does nothing
        """Release resources; readings already handed to the sink are the agent's to keep."""
