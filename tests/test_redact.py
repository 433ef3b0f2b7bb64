"""Unit tests of proxy.redact: exact keys, markers, headers, the fast pre-check."""

from __future__ import annotations

import hashlib

from proxy.redact import Redactor, marker, normalise_key


def _m(secret: str) -> str:
    return f"<redacted:{hashlib.sha256(secret.encode()).hexdigest()[:8]}>"


def test_normalise_key() -> None:
    """Case, underscores and dashes are ignored."""
    assert normalise_key("Access_Token") == normalise_key("access-token") == "accesstoken"


def test_marker_is_stable_short_hash() -> None:
    """Equal secrets give equal markers; different ones differ."""
    assert marker("s3cret") == _m("s3cret") == marker("s3cret")
    assert marker("s3cret") != marker("other")
    assert marker(12345) == f"<redacted:{hashlib.sha256(b'12345').hexdigest()[:8]}>"


def test_redacts_exact_keys_only() -> None:
    """`token` and `accessToken` go; `tokenUsage`, `tokens` and `maxToken` stay."""
    msg = {
        "id": 0,
        "result": {"token": "v1.abc"},
        "params": {
            "tokenUsage": {"total": 5},
            "tokens": {"access_token": "at", "refreshToken": "rt", "id_token": "it"},
            "maxToken": 3,
            "items": [{"apiKey": "k", "Password": "p"}, {"secret": None}],
        },
    }
    redacted, pointers = Redactor().redact_json(msg)
    assert redacted == {
        "id": 0,
        "result": {"token": _m("v1.abc")},
        "params": {
            "tokenUsage": {"total": 5},
            "tokens": {"access_token": _m("at"), "refreshToken": _m("rt"), "id_token": _m("it")},
            "maxToken": 3,
            "items": [{"apiKey": _m("k"), "Password": _m("p")}, {"secret": None}],
        },
    }
    assert pointers == [
        "/result/token",
        "/params/tokens/access_token",
        "/params/tokens/refreshToken",
        "/params/tokens/id_token",
        "/params/items/0/apiKey",
        "/params/items/0/Password",
    ]
    assert msg["result"] == {"token": "v1.abc"}  # the input is untouched


def test_nested_secret_object_is_replaced_whole() -> None:
    """A secret whose value is an object is replaced by one marker."""
    redacted, pointers = Redactor().redact_json({"authorization": {"a": 1}})
    assert redacted == {"authorization": marker({"a": 1})}
    assert pointers == ["/authorization"]


def test_pointer_escaping() -> None:
    """RFC 6901 escapes in reported pointers."""
    _, pointers = Redactor().redact_json({"a/b": {"m~n": {"token": "x"}}})
    assert pointers == ["/a~1b/m~0n/token"]


def test_extra_keys_and_disabled() -> None:
    """--redact-key adds keys; --no-redact changes nothing."""
    msg = {"sessionCookie": "c", "token": "t"}
    assert Redactor.build(["session_cookie"]).redact_json(msg)[0] == {
        "sessionCookie": _m("c"),
        "token": _m("t"),
    }
    off = Redactor.build(enabled=False)
    assert off.redact_json(msg) == (msg, [])
    assert not off.might_redact(b'{"token":"t"}')


def test_headers() -> None:
    """Authorization and Cookie values are replaced; others verbatim; repeats joined."""
    headers = [
        ("Authorization", "Bearer x"),
        ("User-Agent", "ua"),
        ("Cookie", "a"),
        ("X-A", "1"),
        ("X-A", "2"),
    ]
    assert Redactor().redact_headers(headers) == {
        "Authorization": _m("Bearer x"),
        "User-Agent": "ua",
        "Cookie": _m("a"),
        "X-A": "1, 2",
    }


def test_might_redact_precheck() -> None:
    """The raw pre-check finds every secret key form and skips frames without one."""
    r = Redactor()
    assert r.might_redact(b'{"result":{"token":"x"}}')
    assert r.might_redact(b'{"Access-Token" : "x"}')
    assert r.might_redact(b'{"a":{"refresh_token":"x"}}')
    assert r.might_redact(b'{"\\u0074oken":"x"}')  # escapes force the full walk
    assert not r.might_redact(b'{"params":{"tokenUsage":{"total":1}}}')
    assert not r.might_redact(b'{"text":"my token: abc"}')


def test_redacting_twice_changes_nothing() -> None:
    """A marker under a secret key stays as it is: imports of redacted captures keep bytes."""
    redactor = Redactor.build()
    once, pointers = redactor.redact_json({"token": "s3cret", "nested": {"apiKey": 5}})
    twice, again = redactor.redact_json(once)
    assert twice == once == {"token": marker("s3cret"), "nested": {"apiKey": marker(5)}}
    assert pointers == again == ["/token", "/nested/apiKey"]
    headers = redactor.redact_headers([("Authorization", marker("Bearer x"))])
    assert headers == {"Authorization": marker("Bearer x")}
