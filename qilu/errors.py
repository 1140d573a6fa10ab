"""The platform's error tree: each class tells the caller what to do.

QiluError                      root; never raised directly
├── ConfigError                refuse to start; the message names the offending key
├── RetryableError             transient (network, server restart): retry with backoff
│   └── BackpressureError      the sink is saturated: pause, retry after ``retry_after`` s
├── CollectorError             fatal for one collector; the others keep running
├── DecodeError                one wire record cannot be decoded: dead-letter it
├── PartialWriteError          some records were rejected: ``rejected`` says which and why
└── ServiceError               a local server could not be installed or started
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class QiluError(Exception):
    """Root of every error the platform raises on purpose."""


class ConfigError(QiluError):
    """Configuration is invalid: refuse to start. The message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class RetryableError(QiluError):
    """A transient failure: the same call may succeed after a backoff."""


class BackpressureError(RetryableError):
    """The downstream is saturated; pause intake and retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CollectorError(QiluError):
    """Fatal for one collector (bad device, protocol violation); the agent keeps the others."""


class DecodeError(QiluError):
    """A wire record could not be decoded or violates the envelope contract."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Rejection:
    """One rejected reading of a batch: its index in the envelope and the reason code."""

    index: int
    reason: str
    detail: str = ""


class PartialWriteError(QiluError):
    """Some records of a batch were rejected; the rest were written."""

    def __init__(self, rejected: Sequence[Rejection]) -> None:
        super().__init__(f"{len(rejected)} record(s) rejected")
        self.rejected = tuple(rejected)


class ServiceError(QiluError):
    """A local server could not be installed, started or reached; the message says why."""
