"""The pure core: the protocol model, the cassette format, recording, redaction, rules,
matching and the replay planner. No sockets, no event loop."""
