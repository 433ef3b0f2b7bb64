"""Codex's own JSON Schema for the app-server protocol: generate, cache, validate messages.

``codex app-server generate-json-schema --out DIR`` (``--experimental`` adds experimental
methods) writes the protocol of exactly that codex version as Draft-07 JSON Schema files:

* ``ClientRequest.json``, ``ClientNotification.json``, ``ServerRequest.json`` and
  ``ServerNotification.json``: each a ``oneOf`` with one branch per method (the branch's
  ``method`` is ``{"enum": [METHOD]}``); a branch is a whole message (``id``, ``method``,
  ``params``) and allows extra members (``trace``, ``jsonrpc``, ``emittedAtMs``).
* one file per result type, ``XResponse.json`` (under ``v1/``, ``v2/`` or the top level),
  each self-contained (its own ``definitions``). No file maps a method to its result type;
  :func:`response_names` derives it (see there) from the request's params type.
* ``JSONRPCError.json``: the error reply, the same for every method.

:class:`Validator` checks one parsed message at a time (:meth:`Validator.check`): pure, no
I/O after construction, cheap per call (one ``Draft7Validator`` per method and kind, built
on first use or all at once by :meth:`Validator.precompile`). :func:`schema_dir` generates
a version's schema once and caches it in
``$XDG_CACHE_HOME/rpctape/schemas/VERSION[-experimental]/``; :func:`check_cassette` checks a
whole cassette.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT7

from ..core import pointer as _pointer
from ..core.cassette import Cassette, Event
from ..core.jsonrpc import Direction, MessageType, classify, parse
from ..core.options import Settings
from ..errors import AppServerError, UsageError
from ..wire.session import Tally
from .version import version_from_cli_output

_log = logging.getLogger("rpctape.schema")

__all__ = [
    "Checked",
    "Finding",
    "Report",
    "Validator",
    "Violation",
    "cache_root",
    "check_cassette",
    "codex_version",
    "pointer_of",
    "response_names",
    "schema_dir",
    "schema_methods",
]

_TOP_FILES = {
    (Direction.C2S, MessageType.REQUEST): "ClientRequest.json",
    (Direction.C2S, MessageType.NOTIFICATION): "ClientNotification.json",
    (Direction.S2C, MessageType.REQUEST): "ServerRequest.json",
    (Direction.S2C, MessageType.NOTIFICATION): "ServerNotification.json",
}
_ERROR_FILE = "JSONRPCError.json"
_URI = "urn:rpctape:codex-schema:"

RESPONSE_OVERRIDES = {
    "config/value/write": "ConfigWriteResponse",
    "config/batchWrite": "ConfigWriteResponse",
    "config/mcpServer/reload": "McpServerRefreshResponse",
    "account/logout": "LogoutAccountResponse",
    "account/securitySetup/read": "GetAccountSecuritySetupResponse",
    "account/workspaceMessages/read": "GetWorkspaceMessagesResponse",
    "externalAgentConfig/import/readHistories": "ExternalAgentConfigImportHistoriesReadResponse",
    "accountSession/list": "AccountSessionsResponse",  # experimental
}
"""Result types whose name neither the params type nor the method gives (codex 0.169.0 and
0.171.0; read from the generated files: each is the only ``*Response`` left unclaimed).
``modelProvider/default/set`` (0.171.0) has no result type at all: its results are not
checked."""

GENERATE_TIMEOUT = 120.0
"""Seconds ``generate-json-schema`` may take (it takes well under one)."""


# --- the result of a check ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """One way a message breaks the schema, or a method the schema does not know."""

    direction: Direction
    type: MessageType
    method: str | None
    """The message's method, or for a response the method of the request it answers."""
    pointer: str
    """RFC 6901 pointer into the whole message (``/params/input``); ``""`` is the message."""
    message: str
    """The schema's message (jsonschema's), or the unknown-method note."""
    unknown_method: bool = False


@dataclass(frozen=True, slots=True)
class Checked:
    """What :meth:`Validator.inspect` did with one message."""

    violations: list[Violation]
    checked: bool
    """False when no schema applies (a response whose request was not seen, a method with
    no result type, a batch, non-JSON): nothing was said about the message."""


# --- which schema applies ----------------------------------------------------------------


def _camel(method: str) -> list[str]:
    """``account/gatewayOAuth/cancel`` -> the names from each segment on, longest first:
    ``AccountGatewayOAuthCancel``, ``GatewayOAuthCancel``, ``Cancel``."""
    parts = [p[:1].upper() + p[1:] for p in re.split(r"[/_]", method) if p]
    return ["".join(parts[i:]) for i in range(len(parts))]


def response_names(method: str, params_schema: Any) -> list[str]:
    """Candidate result type names for a request ``method``, best first.

    1. ``XParams`` referenced by the branch's ``params`` (directly or in an ``anyOf``) gives
       ``XResponse`` (``turn/start`` -> ``TurnStartParams`` -> ``TurnStartResponse``);
    2. the method's segments camel-cased, from each segment on
       (``windowsSandbox/readiness`` -> ``WindowsSandboxReadinessResponse``);
    3. :data:`RESPONSE_OVERRIDES`.
    """
    refs = re.findall(
        r"#/definitions/(?:v\d+/)?(\w+)Params\b", orjson.dumps(params_schema).decode()
    )
    names = [f"{ref}Response" for ref in refs]
    names += [f"{name}Response" for name in _camel(method)]
    if method in RESPONSE_OVERRIDES:
        names.append(RESPONSE_OVERRIDES[method])
    return names


def pointer_of(path: Iterable[str | int], prefix: str = "") -> str:
    """The RFC 6901 pointer of a path of keys and indexes, after ``prefix``."""
    return prefix + "".join("/" + _pointer.token(p) for p in path)


def _discriminated(error: ValidationError) -> list[ValidationError] | None:
    """For a failed ``oneOf``/``anyOf`` of tagged branches: the errors of the one branch whose
    tag (a ``const``/``enum`` member of the object itself) matched; ``None`` if not exactly one.
    """
    by_branch: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        by_branch.setdefault(int(sub.schema_path[0]), []).append(sub)
    depth = len(error.absolute_path)
    candidates = [
        errors
        for errors in by_branch.values()
        if not any(
            (e.validator in ("const", "enum") and len(e.absolute_path) == depth + 1)
            or (e.validator == "type" and len(e.absolute_path) == depth)
            for e in errors
        )
    ]
    return candidates[0] if len(candidates) == 1 else None


def _precise(error: ValidationError) -> Iterator[ValidationError]:
    """``error``, or for a tagged union the errors inside the branch that applies."""
    if error.validator in ("oneOf", "anyOf"):
        inner = _discriminated(error)
        if inner:
            for sub in inner:
                yield from _precise(sub)
            return
    yield error


class Validator:
    """Checks parsed app-server messages against one codex version's generated schema.

    Build it once per schema directory (``generate-json-schema`` output, e.g. from
    :func:`schema_dir`), then call :meth:`check` for every frame, in any order: it keeps no
    per-connection state (the caller passes the method a response answers, as the cassette's
    ``response_to`` or :class:`proxy.core.jsonrpc.Pairing` gives it).
    """

    def __init__(self, root: Path, *, label: str | None = None) -> None:
        self.root = root
        self.label = label or str(root)
        """How reports name this schema (``codex 0.169.0`` or the directory)."""
        self._files = {p.stem: p for p in sorted(root.rglob("*.json"), reverse=True)}
        missing = [
            name for name in [*_TOP_FILES.values(), _ERROR_FILE] if not (root / name).is_file()
        ]
        if missing:
            raise UsageError(
                f"{root} is not a codex schema directory (no {', '.join(missing)}); make one "
                "with `codex app-server generate-json-schema --out DIR`"
            )
        resources = []
        self._branches: dict[tuple[Direction, MessageType], dict[str, int]] = {}
        self._params: dict[tuple[Direction, str], Any] = {}
        for key, name in _TOP_FILES.items():
            contents = self._load(root / name)
            resources.append((_URI + name, DRAFT7.create_resource(contents)))
            branches: dict[str, int] = {}
            for index, branch in enumerate(contents.get("oneOf", ())):
                method = _branch_method(branch)
                if method is not None:
                    branches[method] = index
                    if key[1] is MessageType.REQUEST:
                        self._params[key[0], method] = branch.get("properties", {}).get("params")
            self._branches[key] = branches
        self._registry: Registry[Any] = Registry().with_resources(resources)
        self._compiled: dict[tuple[Direction, MessageType, str], Draft7Validator | None] = {}
        self._error = Draft7Validator(self._load(root / _ERROR_FILE))

    @staticmethod
    def _load(path: Path) -> Any:
        try:
            return orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise UsageError(f"cannot read schema file {path}: {exc}") from None

    def methods(self, direction: Direction, type: MessageType) -> list[str]:
        """The methods the schema knows for requests or notifications sent in ``direction``."""
        return list(self._branches[direction, type])

    def response_schema(self, request_direction: Direction, method: str) -> str | None:
        """The name of the result type of ``method`` (a request sent in ``request_direction``),
        or ``None`` when the schema has none (or does not know the method)."""
        if (request_direction, method) not in self._params:
            return None
        for name in response_names(method, self._params[request_direction, method]):
            if name in self._files:
                return name
        return None

    def _validator(
        self, direction: Direction, type: MessageType, method: str
    ) -> Draft7Validator | None:
        key = (direction, type, method)
        if key not in self._compiled:
            self._compiled[key] = self._compile(direction, type, method)
        return self._compiled[key]

    def _compile(
        self, direction: Direction, type: MessageType, method: str
    ) -> Draft7Validator | None:
        if type in (MessageType.REQUEST, MessageType.NOTIFICATION):
            index = self._branches[direction, type].get(method)
            if index is None:
                return None
            ref = f"{_URI}{_TOP_FILES[direction, type]}#/oneOf/{index}"
            return Draft7Validator({"$ref": ref}, registry=self._registry)
        # A result: the schema of what the request (sent the other way) returns.
        name = self.response_schema(direction.reverse, method)
        return None if name is None else Draft7Validator(self._load(self._files[name]))

    def check(
        self, direction: Direction, msg: Any, response_to: str | None = None
    ) -> list[Violation]:
        """The violations of one parsed message sent in ``direction`` (see :meth:`inspect`);
        call it once per frame on live traffic."""
        return self.inspect(direction, msg, response_to).violations

    def pairs(
        self, direction: Direction, msg: Any, response_to: str | None = None
    ) -> list[tuple[str, str]]:
        """The violations of one message as ``(pointer, message)`` pairs: the
        :data:`proxy.core.recorder.FrameValidator` that ``record --validate`` gives the recorder."""
        return [(v.pointer, v.message) for v in self.check(direction, msg, response_to)]

    def precompile(self) -> int:
        """Build every method's validator now rather than on first use; returns how many."""
        for (direction, type_), branches in self._branches.items():
            for method in branches:
                self._validator(direction, type_, method)
                if type_ is MessageType.REQUEST:
                    self._validator(direction.reverse, MessageType.RESPONSE, method)
        return sum(v is not None for v in self._compiled.values())

    def inspect(self, direction: Direction, msg: Any, response_to: str | None = None) -> Checked:
        """Check one parsed message sent in ``direction``.

        ``response_to`` is the method of the request a response or error answers (``None``
        when unknown). Requests and notifications are checked against their method's branch
        of the ``oneOf`` (so an error points into that method's params, not "not valid under
        any of the given schemas"), results against the method's result type (pointers start
        with ``/result``), errors against ``JSONRPCError``. A method the schema does not
        know gives one violation with ``unknown_method`` set.
        """
        type_ = classify(msg)
        if type_ in (MessageType.REQUEST, MessageType.NOTIFICATION):
            method: str = msg["method"]
            validator = self._validator(direction, type_, method)
            if validator is None:
                return Checked([self._unknown(direction, type_, method)], True)
            return Checked(self._errors(validator, msg, direction, type_, method, ""), True)
        if type_ is MessageType.ERROR:
            return Checked(self._errors(self._error, msg, direction, type_, response_to, ""), True)
        if type_ is MessageType.RESPONSE and response_to is not None:
            if (direction.reverse, response_to) not in self._params:
                return Checked([self._unknown(direction, type_, response_to)], True)
            validator = self._validator(direction, type_, response_to)
            if validator is None:
                return Checked([], False)
            found = self._errors(validator, msg["result"], direction, type_, response_to, "/result")
            return Checked(found, True)
        return Checked([], False)

    def _unknown(self, direction: Direction, type_: MessageType, method: str) -> Violation:
        what = "result of unknown method" if type_ is MessageType.RESPONSE else "unknown method"
        return Violation(
            direction,
            type_,
            method,
            "/method" if type_ is not MessageType.RESPONSE else "",
            f"{what} {method}: a cassette from a newer codex? ({self.label} does not know it)",
            unknown_method=True,
        )

    @staticmethod
    def _errors(
        validator: Draft7Validator,
        instance: Any,
        direction: Direction,
        type_: MessageType,
        method: str | None,
        prefix: str,
    ) -> list[Violation]:
        found = []
        for error in validator.iter_errors(instance):
            for precise in _precise(error):
                pointer = pointer_of(precise.absolute_path, prefix)
                found.append(Violation(direction, type_, method, pointer, precise.message))
        return sorted(found, key=lambda v: (v.pointer, v.message))


def _branch_method(branch: Any) -> str | None:
    method = branch.get("properties", {}).get("method", {}) if isinstance(branch, dict) else {}
    if "const" in method:
        return str(method["const"])
    values = method.get("enum")
    return str(values[0]) if isinstance(values, list) and len(values) == 1 else None


def schema_methods(root: Path) -> dict[tuple[Direction, MessageType], list[str]]:
    """The methods of a ``generate-json-schema`` folder per direction and kind (requests and
    notifications, client and server), in the schema's order; reads only the four top files
    (no validator is built). Raises :class:`UsageError` for a folder that lacks them."""
    found: dict[tuple[Direction, MessageType], list[str]] = {}
    for key, name in _TOP_FILES.items():
        try:
            contents = orjson.loads((root / name).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise UsageError(
                f"{root} is not a codex schema directory ({name}: {exc}); make one with "
                "`codex app-server generate-json-schema --out DIR`"
            ) from None
        methods = (_branch_method(b) for b in contents.get("oneOf", ()))
        found[key] = [m for m in methods if m is not None]
    return found


# --- generating and caching a version's schema -------------------------------------------


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/rpctape/schemas`` (``~/.cache/rpctape/schemas`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rpctape" / "schemas"


def codex_version(codex: Path) -> str:
    """The version ``codex --version`` prints (``codex-cli 0.169.0`` -> ``0.169.0``)."""
    try:
        done = subprocess.run(
            [str(codex), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AppServerError(f"cannot run {codex} --version: {exc}") from None
    version = version_from_cli_output(done.stdout)
    if done.returncode != 0 or version is None:
        raise AppServerError(
            f"{codex} --version exited {done.returncode} without a version "
            f"(output: {(done.stdout + done.stderr).strip()[:200]!r})"
        )
    return version


def schema_dir(
    codex: Path,
    *,
    experimental: bool = False,
    cache: Path | None = None,
    version: str | None = None,
) -> Path:
    """The schema directory of ``codex``'s version, generated on first use and cached.

    The cache key is the version ``codex --version`` prints (plus ``-experimental``): two
    builds claiming the same version share an entry (delete it to regenerate); pass
    ``version`` when it is known already (:func:`codex_version`). The directory
    is generated into a temporary sibling and renamed into place, so a crash or a concurrent
    run never leaves a half-written entry.
    """
    version = version or codex_version(codex)
    root = cache or cache_root()
    target = root / (version + ("-experimental" if experimental else ""))
    if (target / _ERROR_FILE).is_file() and (target / "ClientRequest.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        command = [str(codex), "app-server", "generate-json-schema", "--out", str(temp)]
        if experimental:
            command.append("--experimental")
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=GENERATE_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AppServerError(f"cannot run {' '.join(command)}: {exc}") from None
        if done.returncode != 0 or not (temp / "ClientRequest.json").is_file():
            raise AppServerError(
                f"{codex} app-server generate-json-schema failed (exit {done.returncode}): "
                f"{done.stderr.strip()[-300:]}"
            )
        with contextlib.suppress(FileExistsError, OSError):
            temp.rename(target)  # another run may have won the race: theirs is as good
        if not (target / "ClientRequest.json").is_file():
            raise AppServerError(f"cannot store the schema in {target}")
        return target
    finally:
        shutil.rmtree(temp, ignore_errors=True)


# --- a whole cassette --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """A violation located in a cassette."""

    cassette: str
    seq: int
    conn: int
    violation: Violation

    def to_json(self) -> dict[str, Any]:
        v = self.violation
        return {
            "cassette": self.cassette,
            "seq": self.seq,
            "conn": self.conn,
            "dir": v.direction.value,
            "type": v.type.value,
            "method": v.method,
            "pointer": v.pointer,
            "message": v.message,
            "unknown_method": v.unknown_method,
        }

    def render(self, limit: int = 300) -> str:
        v = self.violation
        message = v.message if len(v.message) <= limit else v.message[: limit - 1] + "…"
        where = f" {v.pointer}" if v.pointer else ""
        return (
            f"{self.cassette}: seq {self.seq} conn {self.conn} {v.direction.value} {v.type.value} "
            f"{v.method or '?'}{where}: {message}"
        )


@dataclass
class Report:
    """Findings and counts over one or more cassettes."""

    findings: list[Finding] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    """``messages`` checked, ``unchecked`` frames, ``violations``, ``unknown_methods``."""

    @property
    def clean(self) -> bool:
        return not self.findings


def _message_of(event: Event) -> tuple[bool, Any]:
    if "msg" in event:
        return True, event["msg"]
    parsed = parse(str(event.get("raw", "")))
    return parsed.has_msg, parsed.msg


def check_cassette(tape: Cassette, validator: Validator, report: Report, name: str) -> None:
    """Check every text frame of ``tape`` into ``report`` (``name`` labels its findings)."""
    for event in tape.frames():
        if event["kind"] != "text":
            report.counts["unchecked"] += 1
            continue
        has_msg, msg = _message_of(event)
        if not has_msg:
            report.counts["unchecked"] += 1
            continue
        result = validator.inspect(Direction(event["dir"]), msg, event.get("response_to"))
        report.counts["messages" if result.checked else "unchecked"] += 1
        for violation in result.violations:
            report.counts["unknown_methods" if violation.unknown_method else "violations"] += 1
            report.findings.append(Finding(name, event["seq"], event["conn"], violation))


# --- live traffic (--validate, every door) -----------------------------------------------------


def validator_for(settings: Settings, only: Direction | None = None) -> Tally | None:
    """The live check of ``--validate`` (``None`` without it), for every door: codex's schema
    from ``--schema DIR``, or from ``--codex`` (a path or an installed version; default the
    pinned one). ``only``: check frames of that direction only (a replay checks the live
    client's; the server's are recorded)."""
    if not settings.validate:
        return None
    if settings.schema is not None:
        validator = Validator(settings.schema)
    else:
        from .appserver import choose_codex

        binary = choose_codex(settings.codex)
        version = codex_version(binary)
        validator = Validator(schema_dir(binary, version=version), label=f"codex {version}")
    return Tally(validator.pairs, validator.label, only)
