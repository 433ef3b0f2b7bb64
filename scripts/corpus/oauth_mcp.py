"""A tiny HTTP MCP server that wants OAuth, with its own authorization server (aiohttp).

For ``mcpServer/oauth/login``: codex discovers the authorization server from the MCP
server (RFC 9728 protected resource metadata, RFC 8414 authorization server metadata),
registers a client dynamically (RFC 7591, ``POST /register``) and answers the app-server
client with the authorization URL to open. Nobody opens it: the login times out, which
codex reports as ``mcpServer/oauthLogin/completed``. Every MCP request is refused with 401
and the ``WWW-Authenticate`` header that points at the metadata. All on 127.0.0.1, port 0.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from aiohttp import web

CLIENT_ID = "corpus-client"


class OAuthMcpServer:
    """``async with OAuthMcpServer() as server:``; :attr:`mcp_url` goes into codex's config."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.requests: list[tuple[str, str]] = []
        """``(method, path)`` of every request, oldest first."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.base,
            "authorization_endpoint": f"{self.base}/authorize",
            "token_endpoint": f"{self.base}/token",
            "registration_endpoint": f"{self.base}/register",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
        }

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.method, request.path))
        path = request.path
        if path.startswith("/.well-known/oauth-protected-resource"):
            return web.json_response(
                {"resource": self.mcp_url, "authorization_servers": [self.base]}
            )
        if path.startswith("/.well-known/oauth-authorization-server") or path.startswith(
            "/.well-known/openid-configuration"
        ):
            return web.json_response(self._metadata())
        if path == "/register" and request.method == "POST":
            registration: dict[str, Any] = {}
            if body:
                try:
                    registration = await request.json()
                except ValueError:
                    registration = {}
            return web.json_response(
                {
                    "client_id": CLIENT_ID,
                    "client_id_issued_at": 1767225600,
                    "redirect_uris": registration.get("redirect_uris", []),
                    "token_endpoint_auth_method": "none",
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                },
                status=201,
            )
        if path.startswith("/mcp"):
            resource = f"{self.base}/.well-known/oauth-protected-resource"
            return web.Response(
                status=401,
                headers={"WWW-Authenticate": f'Bearer resource_metadata="{resource}"'},
                text="unauthorized",
            )
        return web.Response(status=404, text=f"not found: {request.method} {path}\n")
