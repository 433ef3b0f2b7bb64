"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
from typing import Any

import orjson


def decode_jwt_payload(token: str) -> Any:
    """The payload of a fake ChatGPT id token: three base64url parts, an ``alg: none`` header
    and the signature ``sig`` (what proxy.backend.fake_id_token writes)."""
    header, payload, signature = token.split(".")

    def b64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert orjson.loads(b64(header)) == {"alg": "none", "typ": "JWT"}
    assert b64(signature) == b"sig"
    return orjson.loads(b64(payload))
