"""The session layer: one cassette, one record mode, one far side, any client leg.

Every door of rpctape is a shell over :class:`Session`: ``rpctape record``, ``replay`` (on a
listener or on stdio) and ``wrap``, ``rpctape-codex``, the pytest fixtures and the library.
A session takes its options from the one options model (:class:`~proxy.core.options.Settings`)
and owns, once for every door:

- the record-mode table (:func:`~proxy.core.modes.plan_for`): replay, record, or replay what
  matches and record the rest (``new_episodes``);
- the cassette's lifecycle on disk (:class:`~proxy.wire.store.CassetteFile`): a new file, a
  temporary file beside an existing one replaced atomically when the session ends well, and
  never a good cassette replaced by a worse one; sessions that would write the same cassette
  take turns (:class:`~proxy.wire.store.CassetteLock`), and the header of a kept recording
  names the server that made it;
- which codex a replayed cassette was recorded with, against the one the project is pinned
  to (``--codex-version``, ``--stale``);
- the far side (:mod:`proxy.wire.sides`): live, recorded, or recorded-then-live; one way to
  choose a recorded connection (:meth:`~proxy.core.replay_session.ReplaySession.pair`);
- the client leg: a :class:`~proxy.wire.listener.Listener` (:meth:`Session.start`) or this
  process's stdin and stdout (:meth:`Session.serve_stdio`), with one handshake policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.address import Upstream
from ..core.cassette import Cassette, load, new_header
from ..core.close import Close
from ..core.dialect import NEUTRAL, Dialect, describe_stale, stale_version
from ..core.faults import FaultSet
from ..core.jsonrpc import Direction
from ..core.modes import Plan, Stale, plan_for
from ..core.options import Door, Settings
from ..core.recorder import FrameValidator, Recorder
from ..core.replay_report import Miss, ReplayReport
from ..core.replay_session import ReplaySession
from ..core.rules import Rule
from ..errors import CassetteNotFound, CassetteWriteError, StaleCassette, UsageError
from .bridge import Bridge
from .handshake import HandshakePolicy, Refused
from .legs import NORMAL_CLOSURE, ChildLeg, StdioLeg
from .sides import (
    STDIO_REQUEST,
    LiveSide,
    PlaybackSide,
    RelayOptions,
    explain_miss_closes,
)
from .store import CassetteFile, pauses

if TYPE_CHECKING:
    from .listener import Listener

log = logging.getLogger("rpctape.session")

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)  # fmt: skip
"""Signals a stdio session passes on to its child app-server."""
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})

DRAIN = 0.5
"""Seconds a child's last output may wait for a stdio client that does not read, once
stopping."""


def exit_status(code: int) -> int:
    """A shell's view of a child's status: its code, or 128 + N for death by signal N."""
    return code if code >= 0 else 128 - code


class Session:
    """One cassette served or recorded under one :class:`~proxy.core.options.Settings`.

    Serve clients on a listener (``url = await session.start()``, then :meth:`close`; or
    ``async with session as url:``), or the one client on stdin/stdout
    (``report = await session.serve_stdio()``). :attr:`report` says what was not replayed and
    every miss; :attr:`failure` why the cassette could not be written. A recording replaces
    the cassette only when the session ended well: ``close(commit=True)`` with no write
    failure (and, over stdio, a child app-server that exited 0 or by a stop signal).

    ``options`` are the options model's keyword arguments (the library door); the other
    doors pass ``settings`` they resolved themselves. ``command`` is an app-server to start
    per client (over stdio) instead of ``settings.upstream``. ``validator`` checks live frames
    (``--validate``; built by the door from codex's schema). ``keep_partial`` keeps a
    recording that is not kept beside the cassette instead of deleting it (``record``,
    ``wrap``); ``fresh`` refuses to record over an existing cassette unless
    ``settings.overwrite``. ``version`` names the server when a recording does not say which
    it was (the stand-in runs ``codex --version``; called at most once, at commit).

    A session that may write the cassette takes its lock first
    (:class:`~proxy.wire.store.CassetteLock`, waiting at most ``settings.lock_timeout``
    seconds for another session recording it) and decides again once it has it: with
    ``once``, a cassette another session recorded meanwhile is replayed. A replay finding
    the lock file waits the same way, so it never reads a recording in progress.
    """

    def __init__(
        self,
        cassette: Path | str,
        *,
        settings: Settings | None = None,
        door: Door = Door.LIBRARY,
        command: Sequence[str] = (),
        dialect: Dialect = NEUTRAL,
        validator: FrameValidator | None = None,
        extra_rules: Sequence[Rule] = (),
        after_load: Callable[[], None] | None = None,
        meta: dict[str, Any] | None = None,
        fresh: bool = False,
        keep_partial: bool = False,
        version: Callable[[], str | None] | None = None,
        **options: Any,
    ) -> None:
        if settings is not None and options:
            raise UsageError("give either settings or keyword options, not both")
        self.path = Path(cassette)
        self.door = door
        self.settings = settings if settings is not None else Settings.resolve(door, options)
        self.command = tuple(command)
        self.dialect = dialect
        self.options = self.settings.replay_options(dialect)
        self.faults = FaultSet.parse(self.settings.faults)
        """The session's faults (``--fault``): which fired, which never did."""
        self.rules: tuple[Rule, ...] = (
            *self.settings.rule_list(),
            *extra_rules,
            *self.faults.rules,
        )
        self.validator = validator
        self.after_load = after_load
        """Called once the cassette is loaded and planned, before the first client (the
        commands freeze what is loaded out of the garbage collector's walks)."""
        self.meta = dict(meta or {})
        self.fresh = fresh
        """A recording must make a new cassette unless ``settings.overwrite`` (``record``,
        ``wrap``, :func:`~proxy.library.recording_proxy`)."""
        self.target = (
            Upstream.parse(self.settings.upstream, self.command)
            if self.settings.upstream or self.command
            else None
        )
        settings_ = self.settings
        token = None
        if settings_.token_file is not None:
            token = _read_token(settings_.token_file)
        self.policy = HandshakePolicy(
            settings_.max_size,
            settings_.allow_origins,
            token,
            settings_.handshake_timeout,
            settings_.close_timeout,
        )
        self.file = CassetteFile(
            self.path, keep_partial=keep_partial, dialect=dialect, version=version
        )
        self.plan: Plan | None = None
        """What the session does; decided when it starts."""
        self.waited = 0.0
        """Seconds the session waited for another session recording its cassette."""
        self.stale: str | None = None
        """Why the replayed cassette is stale (``--codex-version``), or ``None``."""
        self.url = ""
        self.transport = "unix" if settings_.listen.path is not None else "websocket"
        """``websocket``, ``unix`` (websocket over a unix socket) or ``stdio``."""
        self.failure: CassetteWriteError | None = None
        """Why the cassette could not be written: those clients were closed with 1011, later
        ones got 503 (a listener), the stdio session ended."""
        self.stdio_close: Close | None = None
        """Set by :meth:`serve_stdio` when the replay ended the session on a miss."""
        self.refused: str | None = None
        """Over stdio: why the far side could not be opened (an app-server that does not
        start, no recorded connection left)."""
        self.child_status: int | None = None
        """Over stdio with a child app-server: its exit status (128 + N for signal N)."""
        self.recorder: Recorder | None = None
        self.kept: bool | None = None
        """After :meth:`close`: whether a recording replaced (or became) the cassette."""
        self._cassette: Cassette | None = None
        self._session: ReplaySession | None = None
        self._listener: Listener | None = None  # imported with websockets by start()
        self._final: ReplayReport | None = None
        self._stdio_notes: list[str] = []
        self._stdio_stop = asyncio.Event()
        self._stdio_ended: asyncio.Event | None = None
        self._child: ChildLeg | None = None
        self._forwarded = False
        """A signal was passed on to the child: it decides when to exit."""

    # -- lifecycle --

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        await self.close(commit=exc_type is None)
        if self.settings.strict and exc_type is None:
            self.report.check()

    async def _decide(self) -> Plan:
        """The plan from the record mode; taking the cassette's lock first when this session
        may write it, or when another session is writing it (then deciding again)."""
        mode = self.settings.record_mode
        plan = plan_for(mode, self.path.is_file())
        lock = self.file.lock
        if (plan is not Plan.REPLAY and self.target is not None) or lock.present:
            await self._take_lock()
            plan = plan_for(mode, self.path.is_file())
            if plan is Plan.REPLAY:
                lock.release()
        return plan

    async def _take_lock(self) -> None:
        lock = self.file.lock
        timeout = self.settings.lock_timeout
        loop = asyncio.get_running_loop()
        start = loop.time()
        for pause in pauses():
            if lock.try_acquire():
                return
            if self.waited == 0.0:
                log.info("waiting for %s, recording %s", lock.holder(), self.path)
            left = timeout - (loop.time() - start)
            if left <= 0:
                raise lock.timed_out(timeout)
            await asyncio.sleep(min(pause, left))
            self.waited = loop.time() - start

    async def _prepare(self) -> Plan:
        """Decide the plan from the record mode and load the cassette (once)."""
        if self.plan is not None:
            raise RuntimeError("the session is already started")
        if self.path.is_dir():
            raise UsageError(f"{self.path} is a directory, not a cassette file; name a .jsonl file")
        mode = self.settings.record_mode
        plan = await self._decide()
        exists = self.path.is_file()
        if plan is not Plan.REPLAY and self.target is None:
            raise UsageError(
                f"record mode {mode.value!r} needs an upstream to record {self.path}"
                + ("" if exists else " (it does not exist yet)")
            )
        if plan is Plan.REPLAY and not exists:
            raise CassetteNotFound(
                f"no cassette at {self.path}; record mode {mode.value!r} only "
                "replays: record it first (record mode 'once' with an upstream, or rpctape record)"
            )
        if plan is not Plan.RECORD and exists:
            self._cassette = load(self.path)
            for warning in self._cassette.warnings:
                log.warning("%s", warning)
            self._check_version(self._cassette)
        self._session = ReplaySession(self._cassette, self.options, str(self.path))
        self.plan = plan
        if self.after_load is not None:
            self.after_load()
        return plan

    def _check_version(self, tape: Cassette) -> None:
        """A cassette recorded with another codex than ``--codex-version``: a warning, or
        (``--stale fail``) :class:`~proxy.errors.StaleCassette`."""
        pinned = self.settings.codex_version
        found = stale_version(tape, pinned, self.dialect) if pinned is not None else None
        if found is None or pinned is None:
            return
        self.stale = describe_stale(str(self.path), found, pinned)
        if self.settings.stale is Stale.FAIL:
            raise StaleCassette(self.stale)
        log.warning("%s", self.stale)

    async def _far_side(self, stdio: bool) -> LiveSide | PlaybackSide:
        """The plan's far side (the cassette opened for writing if it records)."""
        plan = await self._prepare()
        assert self._session is not None
        if plan is Plan.REPLAY:
            return PlaybackSide(self._session, self.rules, validator=self.validator)
        assert self.target is not None
        meta = self.meta | ({"client_transport": "stdio"} if stdio else {})
        redactor = self.settings.redactor()
        # The header names the upstream as the open events do: its secrets (a ?token=, a
        # command's --api-key value) redacted.
        upstream = redactor.redact_text(self.target.url)
        header = new_header(upstream, transport=self.target.kind, meta=meta)
        if plan is Plan.RECORD:
            overwrite = self.settings.overwrite or not self.fresh
            writer = self.file.record(header, overwrite=overwrite)
            after: tuple[Any, ...] = ()
        else:
            writer = self.file.extend(header)
            after = tuple(self._cassette.events) if self._cassette is not None else ()
        self.recorder = Recorder(writer, redactor, after=after, validator=self.validator)
        live = LiveSide(self._relay_options(), self.recorder)
        if plan is Plan.RECORD:
            return live
        return PlaybackSide(self._session, self.rules, live, validator=self.validator)

    def _relay_options(self) -> RelayOptions:
        assert self.target is not None
        s = self.settings
        return RelayOptions(
            s.upstream,
            command=self.command,
            max_size=s.max_size,
            strip_auth=self.policy.token is not None,
            rules=self.rules,
            connect_timeout=s.connect_timeout,
            close_timeout=s.close_timeout,
        )

    async def start(self) -> str:
        """Decide the plan, load the cassette, bind; return the ``ws://HOST:PORT`` URL."""
        from .listener import Listener  # websockets: only a session that listens loads it

        try:
            far = await self._far_side(stdio=False)
            self._listener = Listener(self.settings.listen, self.policy, far)
            self.url = await self._listener.start()
        except BaseException:
            self._listener = None
            self.file.served = False  # it never served: no header-only cassette left
            await self.close(commit=False)
            raise
        assert self.plan is not None
        log.info("%s %s on %s", self.plan.value, self.path, self.url)
        return self.url

    @property
    def failed(self) -> asyncio.Event | None:
        """Set when the cassette cannot be written (a listener session)."""
        return self._listener.failed if self._listener is not None else None

    async def close(self, *, commit: bool = True) -> None:
        """Close every connection (1001), stop listening, finish the cassette; safe twice.

        ``commit`` false (a failed test, an aborted run) keeps the old cassette as it was."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
            if listener.failure is not None:
                self.failure = listener.failure
        if self._stdio_ended is not None:
            self._stdio_stop.set()
            await self._stdio_ended.wait()
        self._finish(commit)
        self.file.lock.release()  # also when the session stopped before it recorded
        if self._session is not None and self._final is None:
            self._final = self._build_report()

    def _finish(self, commit: bool) -> None:
        if self.kept is not None or self.recorder is None:
            return
        if self.failure is None:
            self.failure = self.file.failed
        if commit and self.failure is None:
            try:
                self.kept = self.file.commit()
            except CassetteWriteError as exc:
                self.failure = exc
                self.kept = False
            if not self.kept and self.failure is None:
                self.failure = self.file.failed
        else:
            self.file.abandon()
            self.kept = False

    # -- stdio --

    async def serve_stdio(
        self,
        stdin: int = 0,
        stdout: int = 1,
        *,
        explain: Callable[[str], None] | None = None,
        explain_grace: float = 0.0,
        own_signals: bool = False,
    ) -> ReplayReport:
        """Serve the one client speaking newline-delimited JSON on ``stdin``/``stdout`` (the
        app-server's ``stdio://`` transport) until it is done; return the final report.

        Call it instead of :meth:`start`. Replies already planned when the input ends are
        still written (a client may close its output and keep reading); then the output is
        ended. A close the replay plans ends it at once. A close because of a miss (4409,
        4404) is kept in :attr:`stdio_close`, and ``explain`` is called with the explanation
        ``explain_grace`` seconds before the output ends (a client reading stderr in another
        thread, as the official SDK does, then has it when stdout ends). With a child
        app-server far side (recording), the session ends when the child exits. A write
        failure is explained the same way before the output ends. :meth:`close` from
        another task stops the session. The recording is committed when the session ended
        well.

        ``own_signals`` (a process whose stdio this is: ``wrap``, ``rpctape-codex``,
        ``replay --stdio``): SIGINT and SIGTERM stop the session, and with a child every
        signal of :data:`FORWARDED_SIGNALS` is passed on to it; once the session is over,
        stop signals are blocked (a client that terminates its codex right after closing
        stdin must not kill this process while the cassette is committed; the held signal
        dies with it).
        """
        self._stdio_ended = asyncio.Event()
        try:
            far = await self._far_side(stdio=True)
        except BaseException:
            self._stdio_ended.set()
            await self.close(commit=False)
            raise
        self.transport = "stdio"
        self.url = "stdio://"
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        if own_signals:
            for sig in FORWARDED_SIGNALS if self.plan is not Plan.REPLAY else STOP_SIGNALS:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        try:
            return await self._serve_stdio(stdin, stdout, far, explain, explain_grace)
        finally:
            if installed:
                signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
                for number in installed:
                    loop.remove_signal_handler(number)

    def _on_signal(self, sig: int) -> None:
        if self._child is not None:
            self._child.signal(sig)
            self._forwarded = True
        if sig in (signal.SIGINT, signal.SIGTERM) or (self._child is None and sig in STOP_SIGNALS):
            self._stdio_stop.set()

    async def _serve_stdio(
        self,
        stdin: int,
        stdout: int,
        far: LiveSide | PlaybackSide,
        explain: Callable[[str], None] | None,
        explain_grace: float,
    ) -> ReplayReport:
        client = await StdioLeg.open(self.settings.max_size, stdin, stdout)
        self._stdio_notes = client.notes
        log.info("%s %s over stdio", self.plan.value if self.plan else "", self.path)
        clean = True
        try:
            try:
                pending = await far.prepare(STDIO_REQUEST)
            except Refused as exc:
                self.refused = exc.body.strip()
                log.warning("%s", self.refused)
                self.file.served = False  # nothing was served: nothing to keep
                clean = False
                bridge = None
            else:
                bridge = await pending.open(client)
            if bridge is not None:
                clean = await self._run_stdio(bridge, explain, explain_grace)
            client.close(NORMAL_CLOSURE, "session ended")
            try:
                await asyncio.wait_for(asyncio.shield(client.lost), self.settings.close_timeout)
            except TimeoutError:
                log.warning("the stdio client did not read the last replies; dropped")
        finally:
            client.abort()
            assert self._stdio_ended is not None
            self._stdio_ended.set()
        await self.close(commit=clean and self.failure is None)
        if self.settings.strict:
            self.report.check()
        return self.report

    async def _run_stdio(
        self,
        bridge: Bridge,
        explain: Callable[[str], None] | None,
        grace: float,
    ) -> bool:
        """Until the far side is done or :meth:`close` is called; whether it ended well."""
        closes: list[Close] = []
        server = bridge.server
        replay = getattr(server, "replay", None)
        if replay is not None:
            closes = explain_miss_closes(bridge, replay, explain, grace)
        bridge.on_write_failed = lambda _b, error: self._stdio_write_failed(error)
        if explain is not None:
            bridge.explain_failure = explain
        bridge.start()
        child = self._child = server if isinstance(server, ChildLeg) else None
        stop = asyncio.ensure_future(self._stdio_stop.wait())
        ends: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(asyncio.shield(child.exited if child else server.lost)),
            stop,
        ]
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        for end in ends:
            end.cancel()
        if child is not None:
            await self._drain_child(bridge, child)
        elif not server.lost.done():  # stopped from outside: drop what is left
            bridge.shutdown()
        else:
            await self._held_sent(bridge)  # a client that ended its input still reads
            if closes and grace > 0:
                await asyncio.sleep(grace)  # the output ends after the reason
        self.stdio_close = closes[0] if closes else None
        if bridge.failure is not None:
            self.failure = bridge.failure
            return False
        if child is not None:
            self.child_status = status = exit_status(child.exited.result())
            stopped = status in {128 + s for s in STOP_SIGNALS}
            if status != 0 and not stopped:
                log.warning("the app-server exited with %d: the recording is not kept", status)
                return False
        return True

    async def _held_sent(self, bridge: Bridge) -> None:
        """Until the frames a delay holds for the client are sent, the client is gone, or
        the session is stopped."""
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(bridge.held_sent()),
            asyncio.ensure_future(asyncio.shield(bridge.client.lost)),
            asyncio.ensure_future(self._stdio_stop.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _stdio_write_failed(self, error: CassetteWriteError) -> None:
        """Nothing can be recorded any more: stop the child now, not after its grace."""
        self.failure = error
        self._stdio_stop.set()

    async def _drain_child(self, bridge: Bridge, child: ChildLeg) -> None:
        """The child exited (or we are stopping): relay its last output while the client
        reads it, at most :data:`DRAIN` seconds once stopping; then wait for the bridge."""
        if not child.exited.done():
            if self._forwarded:  # the child got the signal: its exit is its own (wrap's)
                await asyncio.shield(child.exited)
            else:
                child.signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(child.exited), child.grace + 1)
        stopping = self._stdio_stop.is_set()
        if not child.lost.done():
            lost: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(child.lost))
            stop: asyncio.Future[Any] = asyncio.ensure_future(self._stdio_stop.wait())
            try:
                await asyncio.wait({lost, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
                stop.cancel()
        if not child.lost.done():
            try:
                await asyncio.wait_for(asyncio.shield(child.lost), DRAIN)
            except TimeoutError:
                bridge.client.abort()  # drops what the client did not read
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(child.lost), DRAIN)
        await self._held_sent(bridge)  # frames a delay holds for a client that still reads
        bridge.client.close(1000, "app-server exited")  # no-op if the bridge closed it
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bridge.wait(), DRAIN if stopping else 5)

    # -- the report --

    @property
    def report(self) -> ReplayReport:
        """What was not replayed and every miss (final once closed)."""
        if self._final is not None:
            return self._final
        return self._build_report()

    def _build_report(self) -> ReplayReport:
        notes: list[str] = []
        if self.stale is not None:
            notes.append(f"stale: {self.stale}")
        if self.waited >= 0.01:
            notes.append(f"waited {self.waited:.1f}s for another session recording {self.path}")
        if self.transport == "stdio":
            notes.append(
                "transport: stdio (newline-delimited JSON on stdin/stdout; one connection, "
                "paired with the recording that fits it best)"
            )
            notes += [f"stdio: {note}" for note in self._stdio_notes]
        elif self.transport == "unix":
            notes.append(f"transport: websocket over the unix socket {self.settings.listen.path}")
        rec = self.recorder
        if rec is not None and self.target is not None and self.plan is Plan.RECORD:
            notes.append(
                f"recorded {rec.connections} connection(s), {rec.frames[Direction.C2S]} "
                f"frame(s) client>server, {rec.frames[Direction.S2C]} frame(s) server>client "
                f"from {self.target.url}"
            )
        if self.validator is not None and isinstance(self.validator, Tally):
            notes.append(self.validator.summary())
        notes += self.faults.report_lines()
        unfired = tuple(fault.spec for fault in self.faults.unfired())
        session = self._session
        if session is None:
            return ReplayReport(str(self.path), notes=tuple(notes), unfired=unfired)
        report = session.report()
        return ReplayReport(report.cassette, report.connections, tuple(notes), unfired)


class Tally:
    """A schema validator that counts what it checked (a replay's live client frames, a
    recording's frames) for the report; wraps the door's check."""

    def __init__(self, check: FrameValidator, label: str, only: Direction | None = None) -> None:
        self.check = check
        self.label = label
        self.only = only
        self.messages = 0
        self.violations = 0

    def __call__(
        self, direction: Direction, msg: Any, response_to: str | None
    ) -> list[tuple[str, str]]:
        if self.only is not None and direction is not self.only:
            return []
        self.messages += 1
        found = self.check(direction, msg, response_to)
        self.violations += len(found)
        method = msg.get("method") if isinstance(msg, dict) else None
        what = method or (f"response to {response_to}" if response_to else "frame")
        for pointer, message in found:
            log.warning("schema violation (%s) in a live %s %s%s: %s", self.label,
                        direction.value, what, f" {pointer}" if pointer else "",
                        message)  # fmt: skip
        return found

    def summary(self) -> str:
        """``N schema violation(s) in M live message(s) (LABEL)``."""
        return (
            f"{self.violations} schema violation(s) in {self.messages} live message(s) "
            f"({self.label})"
        )


def _read_token(path: Path) -> str:
    """The token clients must send, from ``--token-file``."""
    if not path.is_file():
        raise UsageError(
            f"--token-file {path}: no such file; write the token into a file and pass its path"
        )
    token = path.read_text().strip()
    if not token:
        raise UsageError(f"--token-file {path} is empty")
    return token


def no_recording_left(miss: Miss) -> str:
    """The one line a stdio door says when no recorded connection is left."""
    return miss.render().split("\n", 1)[0]
