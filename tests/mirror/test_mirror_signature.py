"""Webhook signatures and event parsing (pure)."""

from __future__ import annotations

import json

import pytest

from transferd.mirror.webhook import SignatureCheck, parse_events, parse_signature_header, sign, verify_signature
from transferd.sandbox.webhooks import sign_webhook  # the sandbox's independent signer: the sender's view

SECRET = "whsec-test-0123456789"
BODY = b'[{"event_id":"e1","event_type":"analysis_complete_v2","payload":{"samples":[]}}]'
NOW = 1_700_000_000


def check(header: str | None, body: bytes = BODY, now: float = NOW, tolerance: float = 300) -> SignatureCheck:
    return verify_signature(SECRET, header, body, now=now, tolerance=tolerance)


def test_valid_signature_from_the_sender() -> None:
    assert check(sign_webhook(SECRET, BODY, NOW)) is SignatureCheck.OK


def test_matches_the_documented_formula() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha512).hexdigest()
    assert sign(SECRET, BODY, NOW) == expected


def test_missing_and_malformed_headers() -> None:
    assert check(None) is SignatureCheck.MISSING
    assert check("") is SignatureCheck.MISSING
    assert check(f"t={NOW}") is SignatureCheck.BAD  # no v1
    assert check("v1=" + sign(SECRET, BODY, NOW)) is SignatureCheck.BAD  # no t
    assert check(f"t=soon,v1={sign(SECRET, BODY, NOW)}") is SignatureCheck.BAD


def test_forged_or_tampered() -> None:
    assert check(sign_webhook("another-secret-xyz", BODY, NOW)) is SignatureCheck.BAD
    assert check(sign_webhook(SECRET, BODY, NOW), body=BODY + b" ") is SignatureCheck.BAD
    # the timestamp is signed too: moving it breaks the signature
    assert check(f"t={NOW + 1},v1={sign(SECRET, BODY, NOW)}") is SignatureCheck.BAD


def test_stale_timestamp_is_rejected_after_the_signature_checks() -> None:
    header = sign_webhook(SECRET, BODY, NOW - 301)
    assert check(header) is SignatureCheck.STALE
    assert check(header, tolerance=400) is SignatureCheck.OK
    assert check(sign_webhook(SECRET, BODY, NOW + 301)) is SignatureCheck.STALE  # from the future too


def test_several_v1_values_other_schemes_ignored_quotes_and_case() -> None:
    good = sign(SECRET, BODY, NOW)
    assert check(f"t={NOW},v0=deadbeef,v1={'0' * 128},v1={good}") is SignatureCheck.OK
    assert check(f'  t="{NOW}" , v1="{good.upper()}"') is SignatureCheck.OK
    assert check(f"t={NOW},v0={good}") is SignatureCheck.BAD  # only v1 counts
    assert parse_signature_header(f"t={NOW},v1=a,v1=b,x=y") == (NOW, ["a", "b"])


def test_parse_events_v2_and_legacy() -> None:
    doc = [
        {"event_id": "e1", "event_type": "analysis_complete_v2",
         "payload": {"project": {"id": "P"}, "samples": [{"id": "s1", "client_id": "A"}, {"id": "s2"}]}},
        {"event_id": "e2", "event_type": "batch_final_report_complete_v2", "payload": {"project": {"id": "P"}}},
        {"event": "analysis_complete", "object_id": "s3"},
    ]  # fmt: skip
    events = parse_events(json.loads(json.dumps(doc)))
    assert [(e.key, e.project_id, e.sample_ids) for e in events] == [
        ("e1", "P", ("s1", "s2")),
        ("e2", "P", ()),
        ("analysis_complete:s3", None, ("s3",)),
    ]
    assert parse_events(doc[0])[0].key == "e1"  # a single object is accepted


@pytest.mark.parametrize(
    "doc",
    [[], "x", [1], [{"event_type": "x"}], [{"event_id": "e", "payload": []}],
     [{"event_id": "e", "payload": {"samples": [{"client_id": "no id"}]}}]],
)  # fmt: skip
def test_parse_events_rejects_malformed(doc: object) -> None:
    with pytest.raises(ValueError):
        parse_events(doc)
