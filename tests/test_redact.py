"""Unit tests of proxy.core.redact: exact keys, markers, headers, the fast pre-check."""

from __future__ import annotations

import hashlib

import pytest

from proxy.core.redact import Redactor, marker, normalise_key
from proxy.errors import UsageError


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


def test_new_default_keys() -> None:
    """Cloud keys, bearer tokens and attestation values go; token counts stay."""
    msg = {
        "params": {
            "type": "amazonBedrock",
            "accessKeyId": "A1",
            "secretAccessKey": "S1",
            "sessionToken": "T1",
            "region": "us-east-1",
        },
        "result": {
            "config": {
                "model_providers": {"p": {"experimental_bearer_token": "B1", "base_url": "u"}},
                "x-oai-attestation": "v1.X",
            },
            "tokenUsage": {"input_tokens": 3, "total_tokens": 5, "totalTokens": 5},
        },
    }
    redacted, pointers = Redactor().redact_json(msg)
    assert redacted == {
        "params": {
            "type": "amazonBedrock",
            "accessKeyId": _m("A1"),
            "secretAccessKey": _m("S1"),
            "sessionToken": _m("T1"),
            "region": "us-east-1",
        },
        "result": {
            "config": {
                "model_providers": {"p": {"experimental_bearer_token": _m("B1"), "base_url": "u"}},
                "x-oai-attestation": _m("v1.X"),
            },
            "tokenUsage": {"input_tokens": 3, "total_tokens": 5, "totalTokens": 5},
        },
    }
    assert len(pointers) == 5


def test_every_env_value_is_a_secret() -> None:
    """mcp_servers.*.env: each value is replaced, names and nulls kept; env strings walked."""
    msg = {"mcp_servers": {"gh": {"command": "npx", "env": {"GITHUB_TOKEN": "g1", "N": None}}}}
    redacted, pointers = Redactor().redact_json(msg)
    assert redacted == {
        "mcp_servers": {"gh": {"command": "npx", "env": {"GITHUB_TOKEN": _m("g1"), "N": None}}}
    }
    assert pointers == ["/mcp_servers/gh/env/GITHUB_TOKEN"]
    assert Redactor().redact_json({"env": ["A=1"]})[0] == {"env": [_m("A=1")]}
    assert Redactor().redact_json({"env": "production"}) == ({"env": "production"}, [])


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("key sk-proj-abcdefghij0123456789XYZ end", "sk-proj-abcdefghij0123456789XYZ"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature-1 end",
         "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature-1"),
        ("aws AKIAIOSFODNN7EXAMPLE end", "AKIAIOSFODNN7EXAMPLE"),
        ("auth Bearer abc.def-123456 end", "Bearer abc.def-123456"),
        ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789 end",
         "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("slack xoxb-1234567890-abc end", "xoxb-1234567890-abc"),
    ],
)  # fmt: skip
def test_credential_shaped_values(text: str, secret: str) -> None:
    """Credential shapes are replaced wherever they stand, only the credential."""
    r = Redactor()
    assert r.redact_values(text) == text.replace(secret, _m(secret))
    assert r.might_redact(text.encode())
    msg = {"params": {"note": text}}
    assert r.redact_json(msg) == ({"params": {"note": text.replace(secret, _m(secret))}},
                                  ["/params/note"])  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        "task-abcdefghijklmnopqrstuvwxyz",  # sk- inside a word
        "sk-learn-tutorial-for-beginners",  # no digit: not a key
        "the bearer of good news",
        "AKIA short",
        "eyJ only.a prefix",
        "tokenUsage total_tokens input_tokens maxTokens",
    ],
)
def test_lookalikes_are_kept(text: str) -> None:
    """Text that only resembles a credential is not touched."""
    assert Redactor().redact_values(text) is text
    assert Redactor().redact_text(text) is text


def test_redact_value_option() -> None:
    """--redact-value adds patterns; an invalid regex is a UsageError naming it."""
    r = Redactor.build(values=[r"corp-[0-9]{6}"])
    assert r.redact_values("id corp-123456 ok") == f"id {_m('corp-123456')} ok"
    assert r.might_redact(b'{"x":"corp-123456"}')
    assert not r.might_redact(b'{"x":"corp-12"}')
    with pytest.raises(UsageError, match=r"--redact-value '\(': not a regular expression"):
        Redactor.build(values=["("])


def test_headers_by_name_and_shape() -> None:
    """Secret header names are replaced whole; other headers lose credential shapes only."""
    headers = [
        ("X-OAI-Attestation", "v1.att"),
        ("Set-Cookie", "s=1"),
        ("x-api-key", "k"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("OpenAI-Api-Key", "o"),
        ("X-Custom", "Bearer abcdefghijkl"),
        ("Host", "127.0.0.1:1"),
    ]
    assert Redactor().redact_headers(headers) == {
        "X-OAI-Attestation": _m("v1.att"),
        "Set-Cookie": _m("s=1"),
        "x-api-key": _m("k"),
        "Proxy-Authorization": _m("Basic Zm9vOmJhcg=="),
        "OpenAI-Api-Key": _m("o"),
        "X-Custom": _m("Bearer abcdefghijkl"),
        "Host": "127.0.0.1:1",
    }
    again = Redactor().redact_headers(Redactor().redact_headers(headers).items())
    assert again == Redactor().redact_headers(headers)  # markers are never redacted again


def test_query_parameters_and_userinfo_in_urls() -> None:
    """Secret query parameters and URL passwords are replaced; the rest of the URL is kept."""
    r = Redactor()
    url = "ws://user:pw@h:1/p?token=t1&x=1&API_KEY=a%2F1&code=c&page=2&key=&access_token=at"
    assert r.redact_text(url) == (
        f"ws://user:{_m('pw')}@h:1/p?token={_m('t1')}&x=1&API_KEY={_m('a/1')}&code={_m('c')}"
        f"&page=2&key=&access_token={_m('at')}"
    )
    assert r.redact_text("/?tokens=3&max_tokens=2") == "/?tokens=3&max_tokens=2"
    assert r.redact_text("cannot reach ws://h/?secret=s: refused") == (
        f"cannot reach ws://h/?secret={_m('s')}: refused"
    )


def test_frame_text_redaction_keeps_everything_else() -> None:
    """Text that is not JSON: secrets go in place, in truncated values too."""
    r = Redactor()
    assert r.redact_frame_text('garbage {"a": 1, "Api-Key" :\n "k1"} "x') == (
        f'garbage {{"a": 1, "Api-Key" :\n "{_m("k1")}"}} "x',
        True,
    )
    assert r.redact_frame_text('{"token": {"nested": "v", "cut') == (
        '{"token": "' + _m('{"nested": "v", "cut') + '"',
        True,
    )
    assert r.redact_frame_text('{"token": null, "text": "\\u00e9"') == (
        '{"token": null, "text": "\\u00e9"',
        False,
    )


def test_redacting_twice_changes_nothing() -> None:
    """A marker under a secret key stays as it is: imports of redacted captures keep bytes."""
    redactor = Redactor.build()
    once, pointers = redactor.redact_json({"token": "s3cret", "nested": {"apiKey": 5}})
    twice, again = redactor.redact_json(once)
    assert twice == once == {"token": marker("s3cret"), "nested": {"apiKey": marker(5)}}
    assert (pointers, again) == (["/token", "/nested/apiKey"], [])
    headers = redactor.redact_headers([("Authorization", marker("Bearer x"))])
    assert headers == {"Authorization": marker("Bearer x")}
