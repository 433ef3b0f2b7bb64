"""Codex's own: its dialect for the replay core, its tools (the app-server launcher, the fake
model backend, the built-in client, its schema, attest-check, the demo, coverage), and two
doors onto the session layer: the library (ReplayServer, replay_server, recording_proxy)
and the rpctape-codex stand-in."""
