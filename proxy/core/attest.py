"""The ``--attest`` switches: attestation/generate behaviours built from rewrite rules.

The app-server asks a client that advertised ``capabilities.requestAttestation`` for a token
(``attestation/generate``) before each scoped model request and sends the answer, wrapped,
as the ``x-oai-attestation`` header. Each mode here is a small list of :class:`Rule`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .jsonrpc import Direction, MessageType
from .redact import marker
from .rules import Action, Rule, load_rules

METHOD = "attestation/generate"
DEFAULT_ERROR_CODE = -32000


class AttestKind(enum.StrEnum):
    """The attestation modes."""

    PASS = "pass"
    INJECT = "inject"
    REWRITE = "rewrite"
    ERROR = "error"
    GARBAGE = "garbage"
    SILENT = "silent"
    DELAY = "delay"


USAGE = "pass, inject:TOKEN, rewrite:TOKEN, error[:CODE], garbage, silent, delay:MS"


@dataclass(frozen=True)
class AttestMode:
    """One parsed ``--attest`` value."""

    kind: AttestKind
    token: str = ""
    code: int = DEFAULT_ERROR_CODE
    ms: int = 0

    @classmethod
    def parse(cls, text: str) -> AttestMode:
        """Parse ``inject:TOKEN`` and friends; a typo lists the valid modes."""
        name, sep, arg = text.partition(":")
        try:
            kind = AttestKind(name)
        except ValueError:
            raise UsageError(f"--attest {text!r}: unknown mode; valid modes: {USAGE}") from None
        if kind in (AttestKind.INJECT, AttestKind.REWRITE):
            if not arg:
                raise UsageError(f"--attest {name} needs a token: {name}:TOKEN")
            return cls(kind, token=arg)
        if kind is AttestKind.ERROR and sep:
            try:
                return cls(kind, code=int(arg))
            except ValueError:
                raise UsageError(
                    f"--attest error:CODE needs an integer code, not {arg!r}"
                ) from None
        if kind is AttestKind.DELAY:
            if not arg.isdigit():
                raise UsageError("--attest delay needs milliseconds: delay:MS")
            return cls(kind, ms=int(arg))
        if sep:
            raise UsageError(f"--attest {name} takes no argument")
        return cls(kind)

    @property
    def answers_locally(self) -> bool:
        """rpctape answers (or swallows) the request itself: the client never sees it."""
        return self.kind in (
            AttestKind.INJECT,
            AttestKind.ERROR,
            AttestKind.GARBAGE,
            AttestKind.SILENT,
        )


def attestation_rules(modes: Sequence[AttestMode], *, advertise: bool = False) -> list[Rule]:
    """The rules for ``--attest`` modes (in order) and ``--advertise-attestation``.

    Modes where rpctape answers also advertise the capability, so the server asks even when
    the client cannot answer. ``delay`` holds the client's answer, or rpctape's own when
    another mode answers locally.
    """
    local = [m for m in modes if m.answers_locally]
    if len(local) > 1:
        raise UsageError("--attest: choose one of inject, error, garbage and silent")
    rules: list[Rule] = []
    if advertise or local:
        rules.append(
            Rule(
                name="attest: advertise requestAttestation",
                action=Action.PATCH,
                dir=Direction.C2S,
                method="initialize",
                set={"/params/capabilities/requestAttestation": True},
            )
        )
    for mode in modes:
        if mode.kind is AttestKind.DELAY:
            if local:  # hold rpctape's own answer
                rules.append(
                    Rule(
                        f"attest: delay {mode.ms} ms",
                        Action.DELAY,
                        Direction.S2C,
                        METHOD,
                        ms=mode.ms,
                    )
                )
            else:  # hold the client's answer
                rules.append(
                    Rule(
                        f"attest: delay {mode.ms} ms",
                        Action.DELAY,
                        Direction.C2S,
                        response_to=METHOD,
                        ms=mode.ms,
                    )
                )
    for mode in modes:
        rule = _rule(mode)
        if rule is not None:
            rules.append(rule)
    return rules


def token_tag(token: str) -> str:
    """How a rule name shows a token: its redaction marker, never the token itself (rule
    names are written into cassettes and logs)."""
    return marker(token)


def _rule(mode: AttestMode) -> Rule | None:
    kind = mode.kind
    if kind is AttestKind.INJECT:
        return Rule(
            f"attest: inject {token_tag(mode.token)}",
            Action.REPLY,
            Direction.S2C,
            METHOD,
            result={"token": mode.token},
        )
    if kind is AttestKind.REWRITE:
        return Rule(
            f"attest: rewrite {token_tag(mode.token)}",
            Action.PATCH,
            Direction.C2S,
            response_to=METHOD,
            type=MessageType.RESPONSE,
            set={"/result/token": mode.token},
        )
    if kind is AttestKind.ERROR:
        return Rule(
            f"attest: error {mode.code}",
            Action.REPLY,
            Direction.S2C,
            METHOD,
            error={"code": mode.code, "message": "attestation refused by rpctape (--attest error)"},
        )
    if kind is AttestKind.GARBAGE:
        return Rule("attest: garbage", Action.REPLY, Direction.S2C, METHOD, result={})
    if kind is AttestKind.SILENT:
        return Rule("attest: silent", Action.DROP, Direction.S2C, METHOD)
    return None


def build_rules(files: Sequence[Path], attest: Sequence[str], advertise: bool) -> list[Rule]:
    """Rules from files first, then the ``--attest`` switches (``advertise``: also
    ``--advertise-attestation``); what the command line, the pytest plugin and rpctape-codex
    give the bridge."""
    modes = [AttestMode.parse(text) for text in attest]
    return load_rules(files) + attestation_rules(
        [m for m in modes if m.kind is not AttestKind.PASS], advertise=advertise
    )
