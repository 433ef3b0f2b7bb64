"""Putting a live request's id into a recorded reply, byte for byte.

Pure code. A replayed reply carries the live client's id exactly as the client wrote it; every
other byte is the recording's (:class:`LiveId`). :func:`marked_id_slots` cuts a recorded
frame around its id once, so the live id is spliced in without writing the frame again.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import orjson

from .jsonrpc import id_key, id_slots, raw_id, with_raw_id
from .matching import Frame

_ID_MARK = "\x00rpctape:id\x00"
_ID_MARK_JSON = orjson.dumps(_ID_MARK)
_ID_HEAD = b'{"id":'


def marked_id_slots(msg: dict[str, Any], data: bytes) -> tuple[bytes, bytes] | None:
    """``data`` (orjson's writing of ``msg``) cut around its ``id``: ``msg`` written again
    with a marker for the id, cut at the marker (searched in ``data`` if the marker is
    ambiguous)."""
    marked = orjson.dumps({**msg, "id": _ID_MARK})
    before, found, after = marked.partition(_ID_MARK_JSON)
    if found and not after.count(_ID_MARK_JSON):
        return before, after
    return id_slots(data)




class LiveId(NamedTuple):
    """The id of a live client request: its value and its text exactly as the client sent it.

    A replayed reply carries the text verbatim (``2**70`` stays an integer, ``"a\\u00e9"``
    keeps its escape), spliced in place of the recorded id so every other byte is kept. (A
    named tuple: one is made per live request.)
    """

    value: Any
    text: bytes | None
    """The id's JSON text as sent (``None`` if it could not be located)."""

    @classmethod
    def of(cls, frame: Frame) -> LiveId:
        """The id of a live request frame."""
        if frame.parsed.exact:  # the frame is orjson's writing of msg, so is the id in it
            return cls(frame.parsed.id, orjson.dumps(frame.parsed.id))
        return cls(frame.parsed.id, raw_id(frame.data))

    def put_into(
        self, data: bytes, msg: Any = None, slots: tuple[bytes, bytes] | None = None
    ) -> bytes:
        """``data`` (a reply) with this id in place of its own (``slots``: ``data`` already cut
        around its id by :func:`~proxy.core.jsonrpc.id_slots`)."""
        if self.text is not None:
            if slots is not None:
                return b"".join((slots[0], self.text, slots[1]))
            spliced = with_raw_id(data, self.text)
            if spliced is not None:
                return spliced
        if isinstance(msg, dict) and id_key(msg.get("id")) != id_key(self.value):
            with contextlib.suppress(TypeError):  # a value orjson cannot write: keep data
                return orjson.dumps({**msg, "id": self.value})  # key order kept
        return data

