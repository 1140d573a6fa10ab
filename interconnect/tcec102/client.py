"""The province side as a client: calls to one operator's platform, with a circuit breaker.

:class:`Breaker` (pure) decides when an operator may be called again: after ``threshold``
failures in a row it opens for a backoff that doubles per further failure (capped), then
lets one call through (half-open); a success closes it. :class:`OperatorClient` speaks the
exchange layer over a :class:`Transport` (``urllib`` by default, anything in tests): it gets
a token with the outbound keys, pages through ``query_stations_info`` and asks
``query_station_status``. Every answer is verified (signature, decryption, shape) before it
is used; a timeout, a non-200, garbage or a non-zero ``Ret`` raise :class:`PullError` with a
machine-readable reason. What the answers do to the registry and to Kafka is
:mod:`interconnect.tcec102.pull`.
"""

from __future__ import annotations

import enum
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from interconnect.tcec102 import mapping
from interconnect.tcec102.exchange import (
    CST,
    ExchangeError,
    KeySet,
    Ret,
    open_response,
    seal_request,
)
from qilu.errors import RetryableError

logger = logging.getLogger(__name__)
LAST_QUERY_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # LastQueryTime, China time (ADR 0015)
STATUS_BATCH = 50  # StationIDs per query_station_status


class PullError(RetryableError):
    """A call to an operator failed; ``reason`` says how (timeout, http_<status>, garbage,
    bad_signature, ret_<code>, ...). The breaker counts it; the next call may succeed."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """A per-operator circuit breaker with exponential backoff. Pure: the caller passes the
    time (monotonic seconds)."""

    def __init__(self, threshold: int = 3, base_s: float = 5.0, cap_s: float = 600.0) -> None:
        self.threshold, self.base_s, self.cap_s = threshold, base_s, cap_s
        self.failures = 0
        self.open_until = 0.0

    def state(self, now: float) -> BreakerState:
        if self.failures < self.threshold:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now < self.open_until else BreakerState.HALF_OPEN

    def allow(self, now: float) -> bool:
        return self.state(now) is not BreakerState.OPEN

    def success(self) -> None:
        self.failures = 0
        self.open_until = 0.0

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            n = self.failures - self.threshold
            self.open_until = now + min(self.cap_s, self.base_s * 2.0**n)


class Transport(Protocol):
    def post(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes]: ...


class UrllibTransport:
    """HTTP POST with the standard library; network failures and timeouts -> PullError."""

    def post(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes]:
        if not url.startswith(("http://", "https://")):
            raise PullError("bad_url", url[:100])
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - scheme checked above
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                return int(resp.status), bytes(resp.read(8_000_000))
        except urllib.error.HTTPError as exc:
            return int(exc.code), b""
        except TimeoutError as exc:
            raise PullError("timeout", f"no answer within {timeout:g} s") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise PullError("unreachable", str(exc)[:200]) from exc


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    expires_at: datetime


class OperatorClient:
    """Calls to one operator with our outbound keys, as ``our_operator_id``."""

    def __init__(
        self,
        operator_id: str,
        endpoint_url: str,
        keys: KeySet,
        our_operator_id: str,
        transport: Transport | None = None,
        *,
        timeout_s: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.operator_id = operator_id
        self._base = endpoint_url.rstrip("/")
        self._keys = keys
        self._us = our_operator_id
        self._transport = transport or UrllibTransport()
        self._timeout = timeout_s
        self._clock = clock
        self._seq = 0
        self.token: Token | None = None

    def _call(self, interface: str, payload: dict[str, Any], token: str | None) -> dict[str, Any]:
        self._seq = self._seq % 9999 + 1
        env = seal_request(self._us, payload, self._keys, self._clock(), self._seq)
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        import json

        status, body = self._transport.post(
            f"{self._base}/{interface}",
            json.dumps(env.as_json()).encode(),
            headers,
            self._timeout,
        )
        if status != 200:
            raise PullError(f"http_{status}", f"{interface} answered HTTP {status}")
        try:
            resp = open_response(body, self._keys)
        except ExchangeError as exc:
            reason = "garbage" if exc.reason == "malformed_response" else exc.reason
            raise PullError(reason, f"{interface}: {exc.detail}") from exc
        if resp.ret != Ret.OK:
            if resp.ret == Ret.TOKEN:
                self.token = None  # ask for a new one next time
            raise PullError(f"ret_{resp.ret}", f"{interface}: {resp.msg}"[:200])
        if resp.payload is None:
            raise PullError("garbage", f"{interface}: Ret 0 without Data")
        return resp.payload

    def ensure_token(self) -> str:
        now = self._clock()
        if self.token is not None and self.token.expires_at - timedelta(minutes=5) > now:
            return self.token.value
        out = self._call(
            "query_token",
            {"OperatorID": self._us, "OperatorSecret": self._keys.operator_secret},
            None,
        )
        value, life = out.get("AccessToken"), out.get("TokenAvailableTime")
        if out.get("SuccStat") != 0 or not isinstance(value, str) or not value:
            raise PullError("token_refused", f"FailReason {out.get('FailReason')}")
        seconds = life if isinstance(life, int) and life > 0 else 3600
        self.token = Token(value, now + timedelta(seconds=seconds))
        return value

    def stations(
        self, cities: frozenset[str], last_query: datetime | None, page_size: int = 500
    ) -> Iterator[mapping.StationsPage]:
        """Every page of query_stations_info: all stations, or those changed since
        ``last_query`` (LastQueryTime)."""
        since = last_query.astimezone(CST).strftime(LAST_QUERY_TIME_FORMAT) if last_query else ""
        page_no, page_count = 1, 1
        while page_no <= page_count:
            payload = {"LastQueryTime": since, "PageNo": page_no, "PageSize": page_size}
            out = self._call("query_stations_info", payload, self.ensure_token())
            try:
                page = mapping.stations_page(out, cities)
            except ExchangeError as exc:
                raise PullError("garbage", f"query_stations_info: {exc.detail}") from exc
            if page.page_no != page_no:
                raise PullError("garbage", f"asked page {page_no}, got {page.page_no}")
            yield page
            page_count = page.page_count
            page_no += 1

    def statuses(
        self, station_ids: Sequence[str]
    ) -> Iterator[tuple[list[tuple[str, mapping.ConnectorStatus]], list[ExchangeError]]]:
        """query_station_status, STATUS_BATCH stations per call."""
        for i in range(0, len(station_ids), STATUS_BATCH):
            ids = list(station_ids[i : i + STATUS_BATCH])
            out = self._call("query_station_status", {"StationIDs": ids}, self.ensure_token())
            try:
                yield mapping.station_statuses(out)
            except ExchangeError as exc:
                raise PullError("garbage", f"query_station_status: {exc.detail}") from exc
