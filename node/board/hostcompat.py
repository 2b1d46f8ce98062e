# CPython stand-ins for the MicroPython calls the board's MQTT link uses
# (time.ticks_ms / ticks_diff, random.getrandbits), so that
# node/board/mqtt_async.py also runs under the CPython tests.  Imported only
# where the firmware lacks them: a board never loads this file or its names
# (docs/BOARDS.md "Heap budget").


def ticks_ms():
    from time import monotonic  # type: ignore[attr-defined]  # CPython only
    return int(monotonic() * 1000)


def ticks_diff(a, b):
    return a - b


def getrandbits(n):
    # Ports built without the random module.
    from os import urandom
    return int.from_bytes(urandom(4), "big") & ((1 << n) - 1)
