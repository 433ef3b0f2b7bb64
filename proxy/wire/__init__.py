"""Legs, the bridge, the listener and the far sides of each mode: everything that
touches a socket, a pipe or a child process."""
