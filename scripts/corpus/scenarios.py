"""The corpus: one small scenario per method or natural group of the app-server protocol.

Each scenario is recorded from the real ``codex app-server`` (offline: fake model backend,
throwaway ``CODEX_HOME``, the stubs of this folder) by ``scripts/record_cassettes.py
--corpus`` into ``cassettes/corpus/VERSION/NAME.jsonl``; its ``intent`` goes into the
cassette's header (``meta.intent``). Every scenario starts with ``initialize`` and
``initialized``; the rest is as small as the method allows. Values the client sends come
from earlier answers (thread, turn and login ids) or from the fixtures' stable paths
(scripts/corpus/fixtures.py), so a re-recording differs only where the server does.
"""

from __future__ import annotations

import asyncio
import base64

from proxy.codex.backend import Reply, fake_id_token

from . import fixtures
from .driver import CorpusScenario, Run

W = str(fixtures.WORK)
NEWEST = "0.171.0"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- configuration, models, account, misc --------------------------------------------------


async def _config(run: Run) -> None:
    await run.start()
    await run.ok("config/read", {"includeLayers": False})
    await run.ok("configRequirements/read")
    await run.ok(
        "config/value/write",
        {"keyPath": "model_reasoning_effort", "value": "low", "mergeStrategy": "replace"},
    )
    await run.ok(
        "config/batchWrite",
        {"edits": [{"keyPath": "model_verbosity", "value": "low", "mergeStrategy": "replace"}]},
    )
    await run.ok("experimentalFeature/list", {"limit": 2})
    await run.ok("experimentalFeature/enablement/set", {"enablement": {"memories": True}})
    await run.ok("permissionProfile/list", {})
    await run.ok("hooks/list", {"cwds": [W]})


async def _models(run: Run) -> None:
    await run.start()
    await run.ok("model/list", {"limit": 1})
    await run.ok("modelProvider/list", {})
    await run.ok("modelProvider/capabilities/read", {})
    await run.ok(
        "modelProvider/config/write", {"settings": {"type": "customGateway", "providerId": "mock"}}
    )
    if run.version == NEWEST:
        await run.ok("modelProvider/default/set", {"providerId": "mock"})


async def _account(run: Run) -> None:
    await run.start()
    await run.ok("account/read", {})
    await run.ok("account/securitySetup/read")
    await run.ok("account/gatewayOAuth/read")
    await run.ok("account/gatewayOAuth/cancel")
    run.since()
    login = await run.ok("account/login/start", {"type": "chatgpt"})
    await run.ok("account/login/cancel", {"loginId": login["loginId"]})
    await run.note("account/login/completed")
    run.since()
    await run.ok("account/login/start", {"type": "apiKey", "apiKey": "sk-corpus-0123456789abcdef"})
    await run.note("account/updated")
    run.since()
    await run.ok("account/logout")
    await run.note("account/updated")


async def _offline_errors(run: Run) -> None:
    await run.start()
    await run.fails("account/rateLimits/read")
    await run.fails("account/usage/read")
    await run.fails("account/workspaceMessages/read")
    await run.fails("account/rateLimitResetCredit/consume", {"idempotencyKey": "corpus-1"})
    await run.fails("account/sendAddCreditsNudgeEmail", {"creditType": "credits"})
    await run.fails("account/gatewayOAuth/login")
    await run.fails(
        "plugin/skill/read", {"remoteMarketplaceName": "m", "remotePluginId": "p", "skillName": "s"}
    )
    await run.fails("plugin/share/list", {})
    await run.fails("plugin/share/save", {"pluginPath": W})
    await run.fails(
        "plugin/share/updateTargets",
        {"discoverability": "PRIVATE", "remotePluginId": "p", "shareTargets": []},
    )
    await run.fails("plugin/share/checkout", {"remotePluginId": "p"})
    await run.fails("plugin/share/delete", {"remotePluginId": "p"})
    await run.fails("thread/read", {"threadId": "00000000-0000-0000-0000-000000000000"})
    await run.fails("no/such/method", {})


async def _apps(run: Run) -> None:
    await run.start()
    await run.ok("app/list", {})
    await run.ok("app/read", {"appIds": ["corpus-app"]})
    await run.ok("app/installed", {})


async def _external_agent_config(run: Run) -> None:
    await run.start()
    await run.ok("externalAgentConfig/detect", {"includeHome": False, "cwds": [W]})
    await run.ok("externalAgentConfig/import", {"migrationItems": []})
    await run.ok(
        "externalAgentConfig/import/recordHistory", {"itemTypeResults": [], "providerId": "mock"}
    )
    await run.ok("externalAgentConfig/import/readHistories")


async def _windows_sandbox(run: Run) -> None:
    await run.start()
    await run.ok("windowsSandbox/readiness")
    run.since()
    await run.ok("windowsSandbox/setupStart", {"mode": "unelevated"})
    await run.note("windowsSandbox/setupCompleted")


async def _feedback(run: Run) -> None:
    await run.start()
    await run.ok(
        "feedback/save",
        {"classification": "bug", "includeLogs": False, "savePath": f"{fixtures.ROOT}/fb.zip"},
    )


async def _fuzzy_file_search(run: Run) -> None:
    await run.start()
    await run.ok("fuzzyFileSearch", {"query": "hello.py", "roots": [W]})


# --- files and commands --------------------------------------------------------------------


async def _fs(run: Run) -> None:
    await run.start()
    notes = f"{W}/notes"
    await run.ok("fs/createDirectory", {"path": notes, "recursive": True})
    await run.ok("fs/writeFile", {"path": f"{notes}/a.txt", "dataBase64": _b64(b"alpha\n")})
    await run.ok("fs/readFile", {"path": f"{notes}/a.txt"})
    await run.ok("fs/getMetadata", {"path": f"{notes}/a.txt"})
    await run.ok("fs/readDirectory", {"path": notes})
    await run.ok("fs/copy", {"sourcePath": f"{notes}/a.txt", "destinationPath": f"{notes}/b.txt"})
    await run.ok("fs/watch", {"path": notes, "watchId": "watch-1"})
    run.since()
    await run.ok("fs/writeFile", {"path": f"{notes}/c.txt", "dataBase64": _b64(b"gamma\n")})
    await run.note("fs/changed")
    await run.ok("fs/unwatch", {"watchId": "watch-1"})
    await run.ok("fs/remove", {"path": notes, "recursive": True, "force": True})


async def _command_exec(run: Run) -> None:
    await run.start()
    await run.ok("command/exec", {"command": ["echo", "hi"], "cwd": W})
    # cat echoes what the client writes (after saying it is ready); the exec's result comes
    # once stdin is closed.
    run.since()
    streamed = asyncio.create_task(
        run.ok(
            "command/exec",
            {
                "command": ["sh", "-c", "echo ready; cat"],
                "processId": "proc-1",
                "streamStdin": True,
                "streamStdoutStderr": True,
                "cwd": W,
            },
        ),
        name="corpus command/exec cat",
    )
    await run.note("command/exec/outputDelta")
    run.since()
    await run.ok("command/exec/write", {"processId": "proc-1", "deltaBase64": _b64(b"one\n")})
    await run.note("command/exec/outputDelta")
    await run.ok("command/exec/write", {"processId": "proc-1", "closeStdin": True})
    await streamed
    # A terminal: resized, then terminated while it waits for input.
    run.since()
    tty = asyncio.create_task(
        run.ok(
            "command/exec",
            {
                "command": ["sh", "-c", "stty size; read x"],
                "processId": "proc-2",
                "tty": True,
                "streamStdin": True,
                "streamStdoutStderr": True,
                "size": {"rows": 24, "cols": 80},
                "cwd": W,
                "sandboxPolicy": {"type": "dangerFullAccess"},
            },
        ),
        name="corpus command/exec tty",
    )
    await run.note("command/exec/outputDelta")
    await run.ok("command/exec/resize", {"processId": "proc-2", "size": {"rows": 30, "cols": 100}})
    await run.ok("command/exec/terminate", {"processId": "proc-2"})
    await tty


# --- threads and turns ---------------------------------------------------------------------


async def _thread_lifecycle(run: Run) -> None:
    await run.start()
    thread = await run.thread()
    await run.ok("thread/name/set", {"threadId": thread, "name": "Corpus thread"})
    await run.ok("thread/metadata/update", {"threadId": thread, "gitInfo": {"branch": "main"}})
    await run.ok("thread/read", {"threadId": thread})
    await run.ok("thread/list", {"limit": 5})
    await run.ok("thread/loaded/list", {})
    await run.ok("thread/unsubscribe", {"threadId": thread})
    await run.ok("thread/resume", {"threadId": thread, "excludeTurns": True})
    await run.ok("thread/archive", {"threadId": thread})
    await run.ok("thread/unarchive", {"threadId": thread})
    await run.ok("thread/delete", {"threadId": thread})


async def _thread_history(run: Run) -> None:
    await run.start()
    thread = await run.thread()
    done = await run.turn(thread, "Say hello.")
    turn = done["params"]["turn"]["id"]
    await run.ok("thread/turns/list", {"threadId": thread})
    await run.ok("thread/items/list", {"threadId": thread, "turnId": turn})
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    await run.ok("thread/inject_items", {"threadId": thread, "items": [item]})
    await run.ok("thread/fork", {"threadId": thread, "excludeTurns": True})
    await run.ok("thread/revert", {"threadId": thread, "beforeTurnId": turn})


async def _thread_goal(run: Run) -> None:
    await run.start()
    thread = await run.thread()
    run.since()
    await run.ok("thread/goal/set", {"threadId": thread, "objective": "Say hello"})
    await run.note("turn/completed")  # a new goal starts a turn at once
    await run.ok("thread/goal/get", {"threadId": thread})
    await run.ok("thread/goal/clear", {"threadId": thread})


async def _thread_attachments(run: Run) -> None:
    await run.start()
    thread = await run.thread()
    await run.turn(thread, "Say hello.")  # a thread is stored once it has a turn
    key = {"attachmentType": "note", "identityKey": "note-1"}
    await run.ok("thread/attachment/add", {"threadId": thread, **key, "payload": {"text": "x"}})
    await run.ok("thread/attachment/list", {"threadId": thread})
    await run.ok("thread/attachmentOwner/list", key)
    await run.ok("thread/attachment/remove", {"threadId": thread, **key})


async def _thread_sections(run: Run) -> None:
    await run.start()
    thread = await run.thread()
    section = (await run.ok("threadSection/create", {"name": "Work"}))["section"]["id"]
    await run.ok("threadSection/list", {})
    await run.ok("threadSection/update", {"sectionId": section, "name": "Work, renamed"})
    await run.ok("thread/section/move", {"threadId": thread, "sectionId": section})
    await run.ok("threadSection/delete", {"sectionId": section})


async def _thread_shell_command(run: Run) -> None:
    await run.start()
    thread = await run.thread()
    run.since()
    await run.ok("thread/shellCommand", {"threadId": thread, "command": "echo shell"})
    await run.note("turn/completed")


async def _turn_steer_interrupt(run: Run) -> None:
    await run.start()
    thread = await run.thread()
    run.since()
    started = await run.ok(
        "turn/start", {"threadId": thread, "input": [{"type": "text", "text": "Count."}]}
    )
    turn = started["turn"]["id"]
    await run.note("item/agentMessage/delta")
    steer = {"threadId": thread, "expectedTurnId": turn}
    await run.ok("turn/steer", {**steer, "input": [{"type": "text", "text": "Faster."}]})
    run.since()
    await run.note("item/agentMessage/delta")
    await run.ok("turn/interrupt", {"threadId": thread, "turnId": turn})
    await run.note("turn/completed")


async def _thread_compact(run: Run) -> None:
    await run.start()
    thread = await run.thread()
    await run.turn(thread, "Say hello.")
    run.since()
    await run.ok("thread/compact/start", {"threadId": thread})
    await run.note("turn/completed")


async def _review(run: Run) -> None:
    await run.start()
    thread = await run.thread()
    run.since()
    await run.ok("review/start", {"threadId": thread, "target": {"type": "uncommittedChanges"}})
    await run.note("turn/completed")


async def _guardian(run: Run) -> None:
    await run.start()
    thread = await run.thread()
    done = await run.turn(thread, "Say hello.")
    event = {
        "id": "guardian-1",
        "turn_id": done["params"]["turn"]["id"],
        "status": "denied",
        "action": {"type": "command", "source": "shell", "command": "touch x", "cwd": W},
    }
    await run.ok("thread/approveGuardianDeniedAction", {"threadId": thread, "event": event})


# --- skills, plugins, MCP ------------------------------------------------------------------


async def _skills(run: Run) -> None:
    await run.start()
    await run.ok("skills/list", {"cwds": [W]})
    run.since()
    await run.ok("skills/extraRoots/set", {"extraRoots": [str(fixtures.EXTRA_SKILLS)]})
    await run.ok("skills/list", {"cwds": [W], "forceReload": True})
    await run.ok("skills/config/write", {"enabled": False, "name": fixtures.SKILL_NAME})


async def _plugins(run: Run) -> None:
    await run.start()
    manifest = str(fixtures.MARKETPLACE / ".agents" / "plugins" / "marketplace.json")
    plugin = {"pluginName": fixtures.PLUGIN_NAME, "marketplacePath": manifest}
    await run.ok("marketplace/add", {"source": str(fixtures.MARKETPLACE)})
    await run.ok("plugin/list", {"cwds": [W]})
    await run.ok("plugin/read", plugin)
    await run.ok("plugin/install", plugin)
    await run.ok("plugin/installed", {"cwds": [W]})
    await run.ok("plugin/reconcile", {})
    await run.ok(
        "plugin/uninstall", {"pluginId": f"{fixtures.PLUGIN_NAME}@{fixtures.MARKETPLACE_NAME}"}
    )
    await run.fails("marketplace/upgrade", {"marketplaceName": fixtures.MARKETPLACE_NAME})
    await run.ok("marketplace/remove", {"marketplaceName": fixtures.MARKETPLACE_NAME})


async def _mcp_ready(run: Run) -> str:
    """A thread whose stdio MCP server has started."""
    await run.start()
    run.since()
    thread = await run.thread()
    while True:
        note = await run.note("mcpServer/startupStatus/updated")
        if note["params"]["status"] in ("ready", "failed"):
            return thread
        run.since()


async def _mcp_stdio(run: Run) -> None:
    thread = await _mcp_ready(run)
    await run.ok("mcpServerStatus/list", {})
    call = {"threadId": thread, "server": "corpus"}
    await run.ok("mcpServer/tool/call", {**call, "tool": "echo", "arguments": {"text": "hi"}})
    await run.ok("mcpServer/resource/read", {**call, "uri": "corpus://greeting"})
    await run.ok("config/mcpServer/reload")


async def _mcp_oauth_login(run: Run) -> None:
    await run.start()
    run.since()
    await run.ok("mcpServer/oauth/login", {"name": "remote", "timeoutSecs": 1})
    await run.note("mcpServer/oauthLogin/completed")


# --- server requests -----------------------------------------------------------------------

APPROVAL_ARGUMENTS = {
    "cmd": "touch x",
    "sandbox_permissions": "require_escalated",
    "justification": "why",
}
PATCH = "*** Begin Patch\n*** Add File: notes.txt\n+hello\n*** End Patch\n"


async def _one_turn(run: Run) -> None:
    await run.start()
    thread = await run.thread()
    await run.turn(thread, "Go.")


async def _dynamic_tool(run: Run) -> None:
    await run.start(experimental=True)
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "inputSchema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
    thread = await run.thread(dynamicTools=[tool])
    await run.turn(thread, "Weather in Paris?")


async def _mcp_elicitation(run: Run) -> None:
    thread = await _mcp_ready(run)
    call = {"threadId": thread, "server": "corpus", "tool": "ask", "arguments": {}}
    await run.ok("mcpServer/tool/call", call)


async def _chatgpt_tokens_refresh(run: Run) -> None:
    await run.start(experimental=True)
    tokens = {"accessToken": fake_id_token(), "chatgptAccountId": "acct-1"}
    await run.ok("account/login/start", {"type": "chatgptAuthTokens", **tokens})
    thread = await run.thread()
    await run.turn(thread, "Go.")  # its model request is refused once (refusals=1)


SCENARIOS: tuple[CorpusScenario, ...] = (
    CorpusScenario(
        "config",
        "Reading and writing configuration: config/read, configRequirements/read, "
        "config/value/write, config/batchWrite, experimentalFeature/list and "
        "enablement/set, permissionProfile/list, hooks/list.",
        _config,
    ),
    CorpusScenario(
        "models",
        "The model catalogue and providers: model/list (one model), modelProvider/list, "
        "capabilities/read, config/write and, from 0.171.0, modelProvider/default/set.",
        _models,
    ),
    CorpusScenario(
        "account",
        "Account and login without a ChatGPT account: account/read, securitySetup/read, "
        "gatewayOAuth/read and cancel; a ChatGPT login started and cancelled "
        "(account/login/completed, failed); an API-key login then a logout "
        "(account/updated twice).",
        _account,
    ),
    CorpusScenario(
        "offline-errors",
        "Requests that need ChatGPT auth or the remote plugin catalogue, answered offline "
        "with their errors; thread/read of an unknown thread; an unknown method.",
        _offline_errors,
    ),
    CorpusScenario(
        "apps", "The app connectors, none installed: app/list, app/read, app/installed.", _apps
    ),
    CorpusScenario(
        "external-agent-config",
        "externalAgentConfig/detect (nothing found), import of nothing, "
        "import/recordHistory and import/readHistories.",
        _external_agent_config,
    ),
    CorpusScenario(
        "windows-sandbox",
        "windowsSandbox/readiness and setupStart on Linux: started, then "
        "windowsSandbox/setupCompleted reports it is Windows-only.",
        _windows_sandbox,
    ),
    CorpusScenario(
        "feedback", "feedback/save writes a feedback bundle without logs to a file.", _feedback
    ),
    CorpusScenario(
        "fuzzy-file-search",
        "fuzzyFileSearch for hello.py in the repository.",
        _fuzzy_file_search,
    ),
    CorpusScenario(
        "fs",
        "The fs methods on a folder of the repository: createDirectory, writeFile, readFile, "
        "getMetadata, readDirectory, copy; fs/watch, then a write that yields an fs/changed "
        "notification no client message asked for; fs/unwatch, fs/remove.",
        _fs,
    ),
    CorpusScenario(
        "command-exec",
        "command/exec: a plain command; cat with streamed stdin written by "
        "command/exec/write (command/exec/outputDelta echoes it) until stdin is closed; a "
        "terminal resized by command/exec/resize and ended by command/exec/terminate.",
        _command_exec,
    ),
    CorpusScenario(
        "thread-lifecycle",
        "One thread from start to delete without a turn: thread/start, name/set, "
        "metadata/update, read, list, loaded/list, unsubscribe, resume, archive, unarchive, "
        "delete.",
        _thread_lifecycle,
    ),
    CorpusScenario(
        "thread-history",
        "A thread with one turn: turn/start, thread/turns/list, thread/items/list, "
        "thread/inject_items, thread/fork, thread/revert.",
        _thread_history,
        replies=(Reply.text("Hello."),),
    ),
    CorpusScenario(
        "thread-goal",
        "thread/goal/set (which starts a turn at once), thread/goal/get, thread/goal/clear.",
        _thread_goal,
        replies=(Reply.text("Hello."),),
    ),
    CorpusScenario(
        "thread-attachments",
        "thread/attachment/add, attachment/list, attachmentOwner/list, attachment/remove "
        "(thread/attachment/updated twice), on a thread with one turn.",
        _thread_attachments,
        replies=(Reply.text("Hello."),),
    ),
    CorpusScenario(
        "thread-sections",
        "threadSection/create, list, update, thread/section/move and threadSection/delete.",
        _thread_sections,
    ),
    CorpusScenario(
        "thread-shell-command",
        "thread/shellCommand runs a user shell command as a turn of its own.",
        _thread_shell_command,
    ),
    CorpusScenario(
        "turn-steer-interrupt",
        "A turn streamed slowly (deltas 300 ms apart): turn/steer after its first delta, "
        "turn/interrupt after the next; the turn completes interrupted.",
        _turn_steer_interrupt,
        replies=(Reply.text("one two three four five six seven eight nine ten eleven twelve"),),
        deltas=12,
        delta_delay=0.3,
    ),
    CorpusScenario(
        "thread-compact",
        "One turn, then thread/compact/start: a compaction turn with a contextCompaction item.",
        _thread_compact,
        replies=(Reply.text("Hello."), Reply.text("Summary of the conversation.")),
    ),
    CorpusScenario(
        "review",
        "review/start of the uncommitted changes: a review turn entering and leaving review mode.",
        _review,
        replies=(Reply.text("No issues found."),),
    ),
    CorpusScenario(
        "guardian",
        "One turn, then thread/approveGuardianDeniedAction for a (made-up) denied command.",
        _guardian,
        replies=(Reply.text("Hello."),),
    ),
    CorpusScenario(
        "skills",
        "skills/list (a user skill and the bundled ones), skills/extraRoots/set "
        "(skills/changed), skills/list again, skills/config/write disabling the user skill.",
        _skills,
    ),
    CorpusScenario(
        "plugins",
        "A local plugin marketplace: marketplace/add, plugin/list, read, install, installed, "
        "reconcile, uninstall; marketplace/upgrade refused (not a Git marketplace); "
        "marketplace/remove.",
        _plugins,
        config={"features": {"plugins": True}},
    ),
    CorpusScenario(
        "mcp-stdio",
        "A stdio MCP server with one tool and one resource: mcpServerStatus/list, "
        "mcpServer/tool/call, mcpServer/resource/read, config/mcpServer/reload.",
        _mcp_stdio,
        mcp_stdio=True,
    ),
    CorpusScenario(
        "mcp-oauth-login",
        "mcpServer/oauth/login against an HTTP MCP server with a local OAuth endpoint and "
        "dynamic client registration: the authorization URL, then "
        "mcpServer/oauthLogin/completed (timed out, nobody logs in).",
        _mcp_oauth_login,
        oauth_mcp=True,
    ),
    CorpusScenario(
        "command-approval",
        "Server request item/commandExecution/requestApproval (approval_policy on-request), "
        "accepted; serverRequest/resolved; the command runs.",
        _one_turn,
        replies=(
            Reply.function_call(name="exec_command", arguments=APPROVAL_ARGUMENTS),
            Reply.text("Done."),
        ),
        approval_policy="on-request",
    ),
    CorpusScenario(
        "file-change-approval",
        "Server request item/fileChange/requestApproval: the model applies a patch "
        "(approval_policy on-request), accepted; the file is added.",
        _one_turn,
        replies=(
            Reply.function_call(
                name="exec_command", arguments={"cmd": f"apply_patch <<'EOF'\n{PATCH}EOF\n"}
            ),
            Reply.text("Patched."),
        ),
        approval_policy="on-request",
        answers={"item/fileChange/requestApproval": {"decision": "accept"}},
    ),
    CorpusScenario(
        "permissions-approval",
        "Server request item/permissions/requestApproval from the request_permissions tool "
        "(feature request_permissions_tool), granted for the turn.",
        _one_turn,
        replies=(
            Reply.function_call(
                name="request_permissions",
                arguments={"reason": "fetch", "permissions": {"network": {"enabled": True}}},
            ),
            Reply.text("Granted."),
        ),
        approval_policy="on-request",
        config={"features": {"request_permissions_tool": True}},
        answers={"item/permissions/requestApproval": {"permissions": {}, "scope": "turn"}},
    ),
    CorpusScenario(
        "request-user-input",
        "Server request item/tool/requestUserInput from the request_user_input tool "
        "(feature default_mode_request_user_input), answered with one option.",
        _one_turn,
        replies=(
            Reply.function_call(
                name="request_user_input",
                arguments={
                    "questions": [
                        {
                            "id": "color",
                            "header": "Color",
                            "question": "Which color?",
                            "options": [
                                {"label": "Blue", "description": "Calm."},
                                {"label": "Red", "description": "Bold."},
                            ],
                        }
                    ]
                },
            ),
            Reply.text("Blue it is."),
        ),
        config={"features": {"default_mode_request_user_input": True}},
        answers={"item/tool/requestUserInput": {"answers": {"color": {"answers": ["Blue"]}}}},
    ),
    CorpusScenario(
        "dynamic-tool-call",
        "Server request item/tool/call: a dynamic tool given in thread/start (experimentalApi), "
        "called by the model and answered by the client.",
        _dynamic_tool,
        replies=(
            Reply.function_call(name="get_weather", arguments={"city": "Paris"}),
            Reply.text("Sunny."),
        ),
        answers={
            "item/tool/call": {
                "success": True,
                "contentItems": [{"type": "inputText", "text": "22 C and sunny"}],
            }
        },
    ),
    CorpusScenario(
        "mcp-elicitation",
        "Server request mcpServer/elicitation/request: an MCP tool asks the user for a name "
        "during mcpServer/tool/call (approval_policy on-request), accepted.",
        _mcp_elicitation,
        mcp_stdio=True,
        approval_policy="on-request",
        answers={"mcpServer/elicitation/request": {"action": "accept", "content": {"name": "Ada"}}},
    ),
    CorpusScenario(
        "chatgpt-auth-tokens-refresh",
        "Server request account/chatgptAuthTokens/refresh: ChatGPT tokens supplied by the "
        "client (account/login/start chatgptAuthTokens, experimentalApi); the model request "
        "gets 401, the client gives fresh tokens (redacted), the turn completes.",
        _chatgpt_tokens_refresh,
        replies=(Reply.text("Hello after the refresh."),),
        auth="chatgpt",
        refusals=1,
        answers={
            "account/chatgptAuthTokens/refresh": {
                "accessToken": fake_id_token(),
                "chatgptAccountId": "acct-1",
            }
        },
    ),
    CorpusScenario(
        "attestation",
        "Server request attestation/generate: ChatGPT mode, the client advertises "
        "requestAttestation and answers with a token (redacted) before the model request.",
        _one_turn,
        replies=(Reply.text("Attested answer."),),
        auth="chatgpt",
        attestation_token="v1.corpus-token",
    ),
)
