# Portable, sans-I/O core: runs unchanged on CPython and MicroPython.
# No sockets, files, clocks or threads here; bytes and events in, actions out.
