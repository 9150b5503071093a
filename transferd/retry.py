"""The retry policy: one place that decides what is retryable and how long to keep trying.

Around every S3 and API call a tenacity loop with exponential backoff and full jitter, bounded by a deadline
rather than a count, so a daemon rides out a long outage. It is the only layer: the S3 client makes one attempt
per call (botocore's own retries would re-send a request whose answer was lost, e.g. a PUT S3 already stored;
callers for which that matters check first, see `upload.s3.S3Backend.put`). What is not retryable fails fast
and is recorded by the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from transferd.log import event, redact
from transferd.stats import STATS

log = logging.getLogger(__name__)
T = TypeVar("T")

# S3 error codes worth another try. ExpiredToken is retryable after a credential refresh.
S3_RETRYABLE_CODES = frozenset({
    "SlowDown", "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
    "Throttling", "ThrottlingException", "RequestThrottled", "BadDigest", "XAmzContentSHA256Mismatch", "IncompleteBody",
    "ExpiredToken", "TokenRefreshRequired", "RequestTimeTooSkewed", "OperationAborted",
})  # fmt: skip
S3_CREDENTIAL_CODES = frozenset({"ExpiredToken", "TokenRefreshRequired", "InvalidAccessKeyId"})
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class ApiError(Exception):
    """An HTTP error answer from the Gencove API. `retryable` follows the status code."""

    def __init__(self, status: int, operation: str, body: object, retry_after: float | None = None) -> None:
        self.status = status
        self.operation = operation
        self.body = body
        self.retry_after = retry_after
        super().__init__(f"{operation}: HTTP {status}: {_short(body)}")


class TransferIntegrityError(Exception):
    """Bytes arrived but do not match their size or checksum: retry the transfer from a clean state."""


@dataclass(frozen=True, slots=True)
class Policy:
    deadline: float = 3600.0  # give up on an operation after this long
    max_attempts: int = 1000
    initial: float = 0.5  # backoff multiplier (seconds)
    max_wait: float = 60.0
    # Give up this soon when the host cannot be reached at all (its name does not resolve, nothing listens):
    # a one-shot command at a terminal fails fast, naming the host; None (the daemon) waits it out.
    unreachable_deadline: float | None = None


ONE_SHOT = Policy(deadline=600.0, unreachable_deadline=5.0, max_wait=4.0)  # commands a person waits for


def unreachable(exc: BaseException) -> bool:
    """The connection was never made: a name that does not resolve, a refused or unroutable connection."""
    from botocore.exceptions import EndpointConnectionError

    return isinstance(exc, aiohttp.ClientConnectorError | EndpointConnectionError)


DEFAULT_POLICY = Policy()


def classify(exc: BaseException) -> str | None:
    """The retry reason for `exc` (a bounded label), or None when it must not be retried."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    if isinstance(exc, ApiError):
        if exc.status == 429:
            return "throttled"
        return "server_error" if exc.status in RETRYABLE_STATUS else None
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in S3_CREDENTIAL_CODES:
            return "expired_credentials"
        if code in ("SlowDown", "Throttling", "ThrottlingException", "RequestThrottled") or status == 429:
            return "throttled"
        if code in S3_RETRYABLE_CODES or status in RETRYABLE_STATUS:
            return "server_error"
        return None
    if isinstance(exc, TransferIntegrityError):
        return "integrity"
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError | asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(
        exc,
        ConnectionClosedError | EndpointConnectionError | HTTPClientError | ResponseStreamingError
        | aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | ConnectionError,
    ):
        return "connection"
    if isinstance(exc, NoCredentialsError):
        return "expired_credentials"
    return None


def is_credential_error(exc: BaseException) -> bool:
    return classify(exc) == "expired_credentials"


def never_processed(exc: BaseException) -> bool:
    """Retry test for a request that must not run twice (an assignment): only failures that prove the server
    never acted on it. A timeout, a reset mid-request or a 5xx may come after the server did the work, so the
    caller must find out what happened (e.g. from the sample sheet) instead of sending it again."""
    if isinstance(exc, ApiError):
        return exc.status == 429
    return isinstance(exc, aiohttp.ClientConnectorError)  # the connection was never made


def retrying(
    operation: str,
    policy: Policy = DEFAULT_POLICY,
    on_retry: Callable[[BaseException], Awaitable[None] | None] | None = None,
    retry_if: Callable[[BaseException], bool] | None = None,
) -> AsyncRetrying:
    """A tenacity loop for one operation: `async for attempt in retrying("s3.upload_part"): with attempt: ...`.

    Retries are counted in `STATS.retries[(operation, reason)]` and logged; `on_retry` runs before the sleep
    (for example to refresh credentials after an ExpiredToken).
    """

    async def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = classify(exc) if exc else "unknown"
        STATS.retry(operation, reason or "unknown")
        event(
            log, "retry", logging.WARNING, operation=operation, reason=reason, attempt=state.attempt_number,
            wait=round(state.upcoming_sleep, 2), error=_short(exc),
        )
        if on_retry and exc is not None:
            res = on_retry(exc)
            if asyncio.iscoroutine(res):
                await res

    class stop_unreachable(stop_base):
        def __call__(self, state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            return (
                policy.unreachable_deadline is not None
                and exc is not None
                and unreachable(exc)
                and (state.seconds_since_start or 0.0) >= policy.unreachable_deadline
            )

    return AsyncRetrying(
        retry=retry_if_exception(retry_if or (lambda e: classify(e) is not None)),
        stop=stop_after_delay(policy.deadline) | stop_after_attempt(policy.max_attempts) | stop_unreachable(),
        wait=_wait(policy),
        reraise=True,
        before_sleep=before_sleep,
    )


def _wait(policy: Policy) -> Callable[[RetryCallState], float]:
    jitter = wait_random_exponential(multiplier=policy.initial, max=policy.max_wait)

    def wait(state: RetryCallState) -> float:
        # Honour the server's Retry-After when it is longer than our own backoff.
        exc = state.outcome.exception() if state.outcome else None
        base = jitter(state)
        if isinstance(exc, ApiError) and exc.retry_after:
            return max(base, min(exc.retry_after, policy.max_wait))
        return base

    return wait


async def call(
    operation: str,
    fn: Callable[[], Awaitable[T]],
    policy: Policy = DEFAULT_POLICY,
    on_retry: Callable[[BaseException], Awaitable[None] | None] | None = None,
    retry_if: Callable[[BaseException], bool] | None = None,
) -> T:
    """Run `fn()` under the retry policy and return its result."""
    async for attempt in retrying(operation, policy, on_retry, retry_if):
        with attempt:
            return await fn()
    raise AssertionError("unreachable")


def _short(obj: object, limit: int = 300) -> str:
    s = redact(str(obj))  # before cutting: a cut secret no longer matches the redactor
    return s if len(s) <= limit else s[:limit] + "..."
