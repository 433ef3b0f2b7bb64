"""The pure core: the options model, the protocol model, the cassette format, recording,
redaction, rules and faults, matching and the replay planner. No socket, no process, no
event loop; it reads the files it is given and writes none."""
