"""The session layer and what it stands on: legs, the bridge, the listener, the far sides
and the cassette on disk; everything that touches a socket, a pipe, a child process or a
file being written."""
