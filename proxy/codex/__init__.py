"""Codex-specific helpers: the app-server launcher, the fake model backend, the built-in
client, attest-check, the demo, the rpctape-codex stand-in, codex's schema."""
