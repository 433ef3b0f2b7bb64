"""The options model: every session option of rpctape, declared once.

Pure code. Each field of :class:`Settings` is one option: its name (the marker's key and the
library's keyword argument), its type and default, and in its :class:`Spec` the command-line
flag (also the ``RPCTAPE_ARGS`` word), the help text, how a value is read and checked, and
what a door must be able to do for the option to apply (:class:`Need`). The doors derive
everything from it: the typer options of ``rpctape record|replay|wrap``
(:mod:`proxy.cli.options`), the ``RPCTAPE_ARGS`` parser of ``rpctape-codex``
(:func:`parse_words`), the marker's keys of the pytest fixtures, and the keyword arguments of
:class:`proxy.wire.session.Session`. An option that cannot apply to a door is refused there
with the reason (:meth:`Settings.resolve`), never dropped.
"""

from __future__ import annotations

import enum
import math
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

from ..errors import UsageError
from .address import ListenAddress
from .matching import Aspect, Preset, parse_match_on
from .modes import MatchOrder, OnMiss, Pace, RecordMode, Stale, parse_mode
from .ordering import DEFAULT_HOLD_TIMEOUT, Order

DEFAULT_MAX_SIZE = 16 * 1024 * 1024
"""The app-server's own message limit (16 MiB)."""


class Need(enum.Enum):
    """What a door must be able to do for an option to apply there."""

    LISTEN = "listen"
    """It accepts websocket clients (``rpctape record``, ``rpctape replay``, the rpctape
    fixture); stdio doors serve the one client on their stdin and stdout."""
    REPLAY = "replay"
    """It can serve a cassette (everything but ``rpctape record`` and ``rpctape wrap``)."""
    MANY = "many"
    """It serves several connections in one session (a listener)."""
    UPSTREAM = "upstream"
    """It records from a server the user names (``rpctape-codex`` records through the real
    codex, ``wrap`` through the command after ``--``)."""
    NEW_FILE = "new_file"
    """It writes a new cassette every run (``record``, ``wrap``); the others follow their
    record mode."""


class Door(enum.Enum):
    """The ways into a session; each says what it can do (:class:`Need`)."""

    RECORD = "rpctape record"
    REPLAY = "rpctape replay"
    REPLAY_STDIO = "rpctape replay --stdio"
    WRAP = "rpctape wrap"
    STANDIN = "rpctape-codex"
    FIXTURE = "the rpctape fixture"
    CODEX_FIXTURE = "the rpctape_codex fixture"
    LIBRARY = "proxy.wire.session.Session"

    @property
    def can(self) -> frozenset[Need]:
        """What this door can do."""
        return _CAN[self]

    @property
    def takes_words(self) -> bool:
        """Whether options reach it as command-line words (flags) rather than keywords."""
        return self in (Door.RECORD, Door.REPLAY, Door.REPLAY_STDIO, Door.WRAP, Door.STANDIN)

    def why_not(self, need: Need) -> str:
        """Why an option that needs ``need`` does not apply here."""
        return f"{self.value}: {_WHY_NOT[need]}"


_CAN: dict[Door, frozenset[Need]] = {
    Door.RECORD: frozenset({Need.LISTEN, Need.MANY, Need.UPSTREAM, Need.NEW_FILE}),
    Door.REPLAY: frozenset({Need.LISTEN, Need.MANY, Need.UPSTREAM, Need.REPLAY}),
    Door.REPLAY_STDIO: frozenset({Need.UPSTREAM, Need.REPLAY}),
    Door.WRAP: frozenset({Need.NEW_FILE}),
    Door.STANDIN: frozenset({Need.REPLAY}),
    Door.FIXTURE: frozenset({Need.LISTEN, Need.MANY, Need.UPSTREAM, Need.REPLAY}),
    Door.CODEX_FIXTURE: frozenset({Need.REPLAY}),
    Door.LIBRARY: frozenset(Need),
}

_WHY_NOT = {
    Need.LISTEN: "it serves one client on stdin and stdout; nothing listens",
    Need.REPLAY: "it only records; replay with `rpctape replay` (it records too, with "
    "--record-mode)",
    Need.MANY: "it serves one connection per process, so there is no order across "
    "connections to keep",
    Need.UPSTREAM: "it records through the codex it runs (rpctape-codex: $RPCTAPE_REAL_CODEX "
    "or the ini option rpctape_codex; wrap: the command after --)",
    Need.NEW_FILE: "it follows its record mode to decide when a cassette is replaced "
    "(record mode all replaces it)",
}


class Kind(enum.Enum):
    """How an option is given."""

    VALUE = "value"
    """``--flag VALUE``; ``None`` when not given."""
    LIST = "list"
    """``--flag VALUE``, repeatable; a tuple."""
    FLAG = "flag"
    """``--flag`` sets ``True``."""
    FLAG_OFF = "flag_off"
    """``--no-thing`` sets ``False`` (the default is ``True``)."""


@dataclass(frozen=True)
class Spec:
    """How one option is given and checked (the ``metadata`` of a :class:`Settings` field)."""

    flag: str
    help: str
    kind: Kind = Kind.VALUE
    needs: frozenset[Need] = frozenset()
    parse: Callable[[Any], Any] | None = None
    """Turns a value (a command-line word, or a marker's or caller's value) into the field's
    type, raising :class:`UsageError` with a message that says what is valid."""
    metavar: str = "VALUE"
    group: str = "session"
    """The help panel the option is listed under."""


def option(default: Any, flag: str, help: str, **spec: Any) -> Any:
    """A :class:`Settings` field: its default and its :class:`Spec`."""
    metadata = {"spec": Spec(flag, help, **spec)}
    if isinstance(default, list | dict | set):
        raise TypeError("option defaults must be immutable")
    return field(default=default, metadata=metadata)


# --- checks ------------------------------------------------------------------------------------


def _number(what: str, *, low: float, integer: bool = False) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = int(value) if integer else float(value)
        except (TypeError, ValueError):
            kind = "a whole number" if integer else "a number"
            raise UsageError(f"invalid {what} {value!r}; give {kind}") from None
        if not math.isfinite(number) or number < low:
            raise UsageError(
                f"invalid value for {what}: {value} is less than {low:g}, the smallest allowed"
            )
        return number

    return parse


def _positive(what: str) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            shown = repr(number) if math.isfinite(number) else repr(value)
            raise UsageError(f"invalid {what} {shown}; give a number of seconds above 0")
        return number

    return parse


def _regex(value: Any) -> str:
    text = str(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise UsageError(f"--redact-value {text!r}: not a regular expression ({exc})") from None
    return text


def _pointer(value: Any) -> str:
    from .pointer import check

    return check(str(value))


def _attest(value: Any) -> str:
    from .attest import AttestMode

    text = _text(value)
    AttestMode.parse(text)
    return text


def _fault(value: Any) -> str:
    """A fault spec in its canonical form (a bad one: :class:`~proxy.core.faults.FaultError`,
    which names the wrong part and shows the grammar)."""
    from .faults import Fault, parse_fault

    if isinstance(value, Fault):
        return value.spec
    return parse_fault(_text(value)).spec


_VERSION = re.compile(r"\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?\Z")


def _version(value: Any) -> str:
    text = _text(value).strip()
    if not _VERSION.match(text):
        raise UsageError(f"invalid codex version {text!r}; give one such as 0.171.0")
    return text


def _text(value: Any) -> str:
    if not isinstance(value, str | Path):
        raise UsageError(f"expected text, not {value!r}")
    return str(value)


def _path(value: Any) -> Path:
    return Path(_text(value)).expanduser()


def _rule(value: Any) -> Any:
    """A rules file, or a :class:`~proxy.core.rules.Rule` built in code (the library)."""
    if isinstance(value, str | Path):
        return Path(value).expanduser()
    from .rules import Rule

    if isinstance(value, Rule):
        return value
    raise UsageError(f"a rule is a TOML file or a proxy.core.rules.Rule, not {value!r}")


def _listen(value: Any) -> ListenAddress:
    if isinstance(value, ListenAddress):
        return value
    text = _text(value)
    from urllib.parse import urlsplit

    try:
        urlsplit(text).port  # noqa: B018 (raises ValueError out of range)
    except ValueError:
        raise UsageError(
            f"--listen {text}: the port must be a number from 0 to 65535 (0 picks a free one)"
        ) from None
    return ListenAddress.parse(text)


def _upstream(value: Any) -> str:
    text = _text(value)
    try:
        from urllib.parse import urlsplit

        urlsplit(text).port  # noqa: B018 (raises ValueError out of range)
    except ValueError:
        raise UsageError(f"--upstream {text}: the port must be a number from 0 to 65535") from None
    return text


# --- the options -------------------------------------------------------------------------------

_REPLAY = frozenset({Need.REPLAY})
_LISTEN = frozenset({Need.LISTEN})


@dataclass(frozen=True)
class Settings:
    """One session's options, validated (build with :meth:`resolve`)."""

    # What is recorded, and from where.
    record_mode: RecordMode = option(
        RecordMode.NONE, "--record-mode", "When to record instead of replaying: none, once, "
        "new_episodes or all (as in VCR.py).", needs=_REPLAY, metavar="MODE", group="recording",
        parse=lambda v: parse_mode(RecordMode, _text(v) if not isinstance(v, RecordMode) else v,
                                   "record mode"),
    )  # fmt: skip
    upstream: str | None = option(
        None, "--upstream", "The app-server to record from: ws://HOST:PORT, unix://PATH, or "
        "unix:// (its default control socket).", needs=frozenset({Need.UPSTREAM}),
        metavar="URL", group="recording", parse=_upstream,
    )  # fmt: skip
    overwrite: bool = option(
        False, "--overwrite", "Replace an existing cassette (atomically, when the recording "
        "ends well).", kind=Kind.FLAG, needs=frozenset({Need.NEW_FILE}), group="recording",
    )  # fmt: skip
    redact: bool = option(
        True, "--no-redact", "Record secrets as they are (careful).", kind=Kind.FLAG_OFF,
        group="recording",
    )  # fmt: skip
    redact_keys: tuple[str, ...] = option(
        (), "--redact-key", "Also redact JSON members, headers and query parameters with this "
        "key (repeatable).", kind=Kind.LIST, metavar="KEY", group="recording", parse=_text,
    )  # fmt: skip
    redact_values: tuple[str, ...] = option(
        (), "--redact-value", "Also redact text matching this regex, wherever it stands "
        "(repeatable).", kind=Kind.LIST, metavar="REGEX", group="recording", parse=_regex,
    )  # fmt: skip
    max_size: int = option(
        DEFAULT_MAX_SIZE, "--max-size", "Largest message in bytes (a larger one closes the "
        "connection: 1009).", metavar="BYTES", group="limits",
        parse=_number("--max-size", low=1, integer=True),
    )  # fmt: skip
    connect_timeout: float = option(
        10.0, "--connect-timeout", "Seconds to reach the upstream.", metavar="SECONDS",
        group="limits", parse=_positive("--connect-timeout"),
    )  # fmt: skip
    close_timeout: float = option(
        1.0, "--close-timeout", "Seconds a peer has to finish closing (the app-server never "
        "sends a close).", metavar="SECONDS", group="limits", parse=_positive("--close-timeout"),
    )  # fmt: skip
    lock_timeout: float = option(
        120.0, "--lock-timeout", "Seconds to wait for another session recording the same "
        "cassette before giving up.", metavar="SECONDS", group="limits",
        parse=_positive("--lock-timeout"),
    )  # fmt: skip
    # Rewriting.
    rules: tuple[Any, ...] = option(
        (), "--rules", "TOML rules file (repeatable; docs/rules.md).", kind=Kind.LIST,
        metavar="FILE", group="rules", parse=_rule,
    )  # fmt: skip
    attest: tuple[str, ...] = option(
        (), "--attest", "attestation/generate behaviour: pass, inject:TOKEN, rewrite:TOKEN, "
        "error[:CODE], garbage, silent, delay:MS (repeatable).", kind=Kind.LIST,
        metavar="MODE", group="rules", parse=_attest,
    )  # fmt: skip
    advertise_attestation: bool = option(
        False, "--advertise-attestation", "Set capabilities.requestAttestation in initialize.",
        kind=Kind.FLAG, group="rules",
    )  # fmt: skip
    faults: tuple[str, ...] = option(
        (), "--fault", "Break the session on purpose: WHEN:WHAT, e.g. thread/start:error "
        "(repeatable; docs/replay.md, Faults).", kind=Kind.LIST, metavar="SPEC",
        group="rules", parse=_fault,
    )  # fmt: skip
    # Replaying.
    pace: Pace = option(
        Pace(), "--pace", "fast, recorded, or a speed-up factor such as 10.", needs=_REPLAY,
        metavar="SPEED", group="replay", parse=Pace.parse,
    )  # fmt: skip
    on_miss: OnMiss = option(
        OnMiss.ERROR, "--on-miss", "An unmatched request gets: error (JSON-RPC -32099) or "
        "close.", needs=_REPLAY, metavar="ACTION", group="replay",
        parse=lambda v: parse_mode(OnMiss, v, "on-miss action"),
    )  # fmt: skip
    match: MatchOrder = option(
        MatchOrder.STRICT, "--match", "strict or any-order.", needs=_REPLAY, metavar="ORDER",
        group="replay", parse=lambda v: parse_mode(MatchOrder, v, "match order"),
    )  # fmt: skip
    match_on: frozenset[Aspect] = option(
        Preset.CODEX.aspects, "--match-on", "What is compared: codex (default: ignores "
        "clientInfo, working directories and timestamps), exact, or aspects such as "
        "method,body,cwd.", needs=_REPLAY, metavar="WHAT", group="replay", parse=parse_match_on,
    )  # fmt: skip
    ignore: tuple[str, ...] = option(
        (), "--ignore", "Also ignore this JSON pointer when matching (repeatable).",
        kind=Kind.LIST, needs=_REPLAY, metavar="POINTER", group="replay", parse=_pointer,
    )  # fmt: skip
    allow_playback_repeats: bool = option(
        False, "--allow-playback-repeats", "A recorded exchange may answer again once used.",
        kind=Kind.FLAG, needs=_REPLAY, group="replay",
    )  # fmt: skip
    strict: bool = option(
        False, "--strict", "Fail on any miss, unused recorded client message or unfired fault.",
        kind=Kind.FLAG, needs=_REPLAY, group="replay",
    )  # fmt: skip
    order: Order = option(
        Order.THREAD, "--order", "Order across connections: thread (a frame about a thread "
        "waits for earlier messages about it elsewhere), global, or none.",
        needs=frozenset({Need.REPLAY, Need.MANY}), metavar="ORDER", group="replay",
        parse=lambda v: parse_mode(Order, v, "order"),
    )  # fmt: skip
    hold_timeout: float = option(
        DEFAULT_HOLD_TIMEOUT, "--hold-timeout", "Seconds a frame is held for another "
        "connection before it is sent anyway.", needs=frozenset({Need.REPLAY, Need.MANY}),
        metavar="SECONDS", group="replay", parse=_positive("hold timeout"),
    )  # fmt: skip
    # Accepting clients.
    listen: ListenAddress = option(
        ListenAddress("127.0.0.1", 0), "--listen", "Where clients connect: ws://HOST:PORT "
        "(port 0 picks one) or unix:///PATH.", needs=_LISTEN, metavar="URL", group="clients",
        parse=_listen,
    )  # fmt: skip
    allow_origins: frozenset[str] = option(
        frozenset(), "--allow-origin", "Accept upgrades with this Origin (repeatable).",
        kind=Kind.LIST, needs=_LISTEN, metavar="ORIGIN", group="clients", parse=_text,
    )  # fmt: skip
    token_file: Path | None = option(
        None, "--token-file", "Clients must send 'Authorization: Bearer <token>' with the "
        "token in this file.", needs=_LISTEN, metavar="FILE", group="clients", parse=_path,
    )  # fmt: skip
    allow_remote: bool = option(
        False, "--allow-remote", "Allow a non-loopback --listen (needs --token-file).",
        kind=Kind.FLAG, needs=_LISTEN, group="clients",
    )  # fmt: skip
    handshake_timeout: float = option(
        10.0, "--handshake-timeout", "Seconds a client has to send its whole upgrade request.",
        needs=_LISTEN, metavar="SECONDS", group="clients",
        parse=_positive("--handshake-timeout"),
    )  # fmt: skip
    # Checking.
    validate: bool = option(
        False, "--validate", "Check live frames against codex's JSON Schema.", kind=Kind.FLAG,
        group="checks",
    )  # fmt: skip
    codex: str | None = option(
        None, "--codex", "--validate against this codex's schema: a path or a version "
        "installed by ./dev setup.", metavar="CODEX", group="checks", parse=_text,
    )  # fmt: skip
    schema: Path | None = option(
        None, "--schema", "--validate against this schema folder instead.", metavar="DIR",
        group="checks", parse=_path,
    )  # fmt: skip
    codex_version: str | None = option(
        None, "--codex-version", "The codex version the project is pinned to: a replayed "
        "cassette recorded with another one is stale (--stale).", needs=_REPLAY,
        metavar="VERSION", group="checks", parse=_version,
    )  # fmt: skip
    stale: Stale = option(
        Stale.WARN, "--stale", "A stale cassette (--codex-version): warn (logged, noted in "
        "the report) or fail (not replayed).", needs=_REPLAY, metavar="ACTION",
        group="checks", parse=lambda v: parse_mode(Stale, v, "stale action"),
    )  # fmt: skip
    report_json: Path | None = option(
        None, "--report-json", "Write the whole replay report as JSON to this file.",
        needs=_REPLAY, metavar="FILE", group="checks", parse=_path,
    )  # fmt: skip

    # -- building --

    @classmethod
    def resolve(
        cls,
        door: Door,
        given: Mapping[str, Any],
        *,
        defaults: Mapping[str, Any] | None = None,
    ) -> Settings:
        """The settings ``door`` was given: unknown names and options that cannot apply to
        the door are refused with the reason, values checked, combinations checked.

        An option left at its unset value (``None``, ``False`` for a flag, an empty list) is
        not given. ``defaults`` are the door's own defaults for options not given.
        """
        values: dict[str, Any] = {}
        for name, value in given.items():
            spec = SPECS.get(name)
            if spec is None:
                raise UsageError(_unknown(door, name))
            if _unset(spec, value):
                continue
            missing = sorted(spec.needs - door.can, key=lambda n: n.value)
            if missing:
                raise UsageError(
                    f"{_named(door, name)} does not apply to {door.why_not(missing[0])}"
                )
            values[name] = _convert(door, name, spec, value)
        for name, value in (defaults or {}).items():
            if name not in values:
                values[name] = _convert(door, name, SPECS[name], value)
        settings = cls(**values)
        settings._check(door)
        return settings

    def _check(self, door: Door) -> None:
        """Combinations that cannot work together."""
        name = _namer(door)
        if not self.redact and (self.redact_keys or self.redact_values):
            raise UsageError(
                f"{name('redact')} excludes {name('redact_keys')} and {name('redact_values')}: "
                f"{name('redact')} records every secret as it is; drop one of them"
            )
        if not self.validate and (self.codex is not None or self.schema is not None):
            raise UsageError(
                f"{name('codex')} and {name('schema')} choose the schema of "
                f"{name('validate')}: add {name('validate')}"
            )
        if self.stale is not Stale.WARN and self.codex_version is None:
            raise UsageError(
                f"{name('stale')} says what replaying a cassette recorded with another codex "
                f"than {name('codex_version')} does: add {name('codex_version')}"
            )
        if self.codex is not None and self.schema is not None:
            raise UsageError(
                f"{name('codex')} and {name('schema')} exclude each other: give one schema source"
            )
        if (
            self.upstream is not None
            and self.record_mode is RecordMode.NONE
            and Need.REPLAY in door.can
        ):
            raise UsageError(
                f"{name('upstream')} is only used to record ({name('record_mode')} once, "
                "new_episodes or all); record mode none only replays: drop "
                f"{name('upstream')} or pick a record mode"
            )
        if not self.listen.is_loopback and not (self.allow_remote and self.token_file):
            raise UsageError(
                f"{name('listen')} {self.listen} is not a loopback address; pass "
                f"{name('allow_remote')} together with {name('token_file')}"
                f"{' FILE' if door.takes_words else ''} to accept remote clients"
            )

    # -- what the layers below take --

    def replay_options(self, dialect: Any = None) -> Any:
        """The planner's :class:`~proxy.core.planner.ReplayOptions` (``dialect``: the
        protocol's conventions, :mod:`proxy.core.dialect`)."""
        from .dialect import NEUTRAL
        from .matching import Rules
        from .planner import ReplayOptions

        return ReplayOptions(
            self.pace,
            self.on_miss,
            self.match,
            Rules.build(self.ignore, match_on=self.match_on),
            self.allow_playback_repeats,
            self.order,
            self.hold_timeout,
            dialect if dialect is not None else NEUTRAL,
        )

    def redactor(self) -> Any:
        """The :class:`~proxy.core.redact.Redactor` recordings use."""
        from .redact import Redactor

        return Redactor.build(self.redact_keys, enabled=self.redact, values=self.redact_values)

    def rule_list(self, base: Path | None = None) -> list[Any]:
        """The rules files (relative to ``base``), rules built in code, then the attestation
        switches and the faults, as the bridge takes them."""
        from .attest import build_rules
        from .rules import Rule, load_rules

        built: list[Rule] = []
        files: list[Path] = []
        for item in self.rules:
            if isinstance(item, Rule):
                built.append(item)
            else:
                files.append(item if base is None or item.is_absolute() else base / item)
        loaded = load_rules(files) if files else []
        return loaded + built + build_rules((), self.attest, self.advertise_attestation)


SPECS: dict[str, Spec] = {f.name: f.metadata["spec"] for f in fields(Settings)}
"""Every option, by name, in declaration order."""


def _namer(door: Door) -> Callable[[str], str]:
    """How ``door`` names an option in a message: its flag, or ``name=``."""
    return lambda name: _named(door, name)


def _named(door: Door, name: str) -> str:
    return SPECS[name].flag if door.takes_words else f"{name}="


def _unknown(door: Door, name: str) -> str:
    if door.takes_words:
        valid = ", ".join(s.flag for s in SPECS.values())
        return f"unknown option {name!r} for {door.value}; valid: {valid}"
    valid = ", ".join(SPECS)
    return f"unknown option {name!r} for {door.value}; valid: {valid}"


def _unset(spec: Spec, value: Any) -> bool:
    if spec.kind is Kind.FLAG:
        return value is None or value is False
    if spec.kind is Kind.FLAG_OFF:
        return value is None or value is True
    if spec.kind is Kind.LIST:
        return value is None or (not isinstance(value, str | Path) and not list(value))
    return value is None


def _convert(door: Door, name: str, spec: Spec, value: Any) -> Any:
    try:
        if spec.kind in (Kind.FLAG, Kind.FLAG_OFF):
            if not isinstance(value, bool):
                raise UsageError(f"expected true or false, not {value!r}")
            return value
        if spec.kind is Kind.LIST:
            items = [value] if isinstance(value, str | Path) else list(value)
            parse = spec.parse or _text
            converted = tuple(parse(item) for item in items)
            return frozenset(converted) if name == "allow_origins" else converted
        return value if spec.parse is None else spec.parse(value)
    except UsageError as exc:
        text = str(exc)
        label = _named(door, name)
        if text.startswith("invalid ") or label.rstrip("=") in text or spec.flag in text:
            raise
        raise UsageError(f"{label} {text}") from None


# --- RPCTAPE_ARGS ------------------------------------------------------------------------------


class _WordsError(Exception):
    pass


def _words_parser(prog: str) -> Any:
    import argparse  # only words to read need it (the stand-in with $RPCTAPE_ARGS)

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise _WordsError(message)

    parser = _Parser(prog=prog, add_help=False, exit_on_error=False, allow_abbrev=False)
    for name, spec in SPECS.items():
        if spec.kind is Kind.FLAG:
            parser.add_argument(spec.flag, dest=name, action="store_true", default=None)
        elif spec.kind is Kind.FLAG_OFF:
            parser.add_argument(spec.flag, dest=name, action="store_false", default=None)
        elif spec.kind is Kind.LIST:
            parser.add_argument(spec.flag, dest=name, action="append", default=None)
        else:
            parser.add_argument(spec.flag, dest=name, default=None)
    return parser


def parse_words(text: str | Sequence[str], door: Door, *, source: str) -> dict[str, Any]:
    """The options in command-line words (``RPCTAPE_ARGS``), as ``resolve`` takes them.

    Every option of the model is known here (one that does not apply to ``door`` is refused
    by :meth:`Settings.resolve` with the reason); a word that is no option is refused with
    the list of options."""
    valid = ", ".join(s.flag for s in SPECS.values())
    try:
        words = shlex.split(text) if isinstance(text, str) else list(text)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"{source}: {exc}; valid options: {valid}") from None
    if not words:
        return {}
    import argparse

    try:
        namespace = _words_parser(source).parse_args(words)
    except (ValueError, _WordsError, argparse.ArgumentError) as exc:
        raise UsageError(f"{source}: {exc}; valid options: {valid}") from None
    return {k: v for k, v in vars(namespace).items() if v is not None}


def to_words(given: Mapping[str, Any]) -> list[str]:
    """Options given as keywords (a marker's) as command-line words (``RPCTAPE_ARGS``), the
    inverse of :func:`parse_words` for the options that are set."""
    words: list[str] = []
    for name, value in given.items():
        spec = SPECS[name]
        if _unset(spec, value):
            continue
        if spec.kind in (Kind.FLAG, Kind.FLAG_OFF):
            words.append(spec.flag)
        elif spec.kind is Kind.LIST:
            for item in [value] if isinstance(value, str | Path) else list(value):
                words += [spec.flag, _word(item)]
        else:
            words += [spec.flag, _word(value)]
    return words


def _word(value: Any) -> str:
    if isinstance(value, frozenset | set) and all(isinstance(v, Aspect) for v in value):
        return ",".join(sorted(v.value for v in value))
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def help_lines(door: Door) -> list[str]:
    """``--flag METAVAR  help`` for every option that applies to ``door``."""
    lines = []
    for spec in SPECS.values():
        if spec.needs <= door.can:
            arg = "" if spec.kind in (Kind.FLAG, Kind.FLAG_OFF) else f" {spec.metavar}"
            lines.append(f"{spec.flag}{arg}: {spec.help}")
    return lines


def applicable(door: Door) -> Iterable[tuple[str, Spec]]:
    """The options that apply to ``door``, in declaration order."""
    return ((name, spec) for name, spec in SPECS.items() if spec.needs <= door.can)
