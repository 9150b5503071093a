"""The retry policy: what is retried, and that a non-idempotent call is retried only when it never ran."""

from __future__ import annotations

import aiohttp
import pytest
from botocore.exceptions import ClientError

from transferd.retry import ApiError, Policy, call, classify, never_processed

FAST = Policy(deadline=5, initial=0.001, max_wait=0.01)


def s3_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "UploadPart")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ApiError(503, "x", {}), "server_error"),
        (ApiError(429, "x", {}), "throttled"),
        (ApiError(400, "x", {}), None),
        (ApiError(404, "x", {}), None),
        (s3_error("SlowDown", 503), "throttled"),
        (s3_error("ExpiredToken", 400), "expired_credentials"),
        (s3_error("InternalError", 500), "server_error"),
        (s3_error("NoSuchUpload", 404), None),
        (s3_error("AccessDenied", 403), None),
        (TimeoutError(), "timeout"),
        (aiohttp.ServerDisconnectedError(), "connection"),
        (ValueError("a bug"), None),
    ],
)
def test_classify(exc: BaseException, reason: str | None) -> None:
    assert classify(exc) == reason


def test_never_processed_only_for_proof_that_the_server_did_nothing() -> None:
    assert never_processed(ApiError(429, "assign", {}))
    assert not never_processed(ApiError(503, "assign", {}))  # may have been carried out before the error
    assert not never_processed(TimeoutError())
    assert not never_processed(aiohttp.ServerDisconnectedError())


async def test_call_retries_transient_errors_then_succeeds() -> None:
    answers: list[BaseException | str] = [ApiError(503, "x", {}), ApiError(429, "x", {}), "ok"]

    async def fn() -> str:
        a = answers.pop(0)
        if isinstance(a, BaseException):
            raise a
        return a

    assert await call("api.test", fn, FAST) == "ok"


async def test_non_idempotent_call_is_not_retried_after_an_ambiguous_failure() -> None:
    calls = 0

    async def fn() -> str:
        nonlocal calls
        calls += 1
        raise ApiError(502, "assign", {})

    with pytest.raises(ApiError):
        await call("api.assign", fn, FAST, retry_if=never_processed)
    assert calls == 1
