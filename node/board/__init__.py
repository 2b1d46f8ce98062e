# Board-side drivers (MicroPython first, CPython too): the code that owns
# sockets and clocks and drives the sans-I/O state machines in node/core.
