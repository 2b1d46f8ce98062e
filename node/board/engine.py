# Where a board's modules execute.  runtime.py talks to an engine only
# through these calls, so proxy execution (node/board/proxy.py, modules run
# on the gateway) and a native wasm3 engine (issue 7, firmware/) are
# interchangeable per module:
#
#   mode                          "proxy" | "native" (shown in the status)
#   subscriptions() -> [(filter, qos)]   MQTT topics the engine needs
#   on_connect()                  the MQTT session is (re)established
#   on_message(topic, msg) -> bool  a message on one of its topics; True
#                                 when the message may be acked now
#   tick(now_ms)                  about once a second (and after messages)
#   start(rec, done)              run module `rec` (see runtime.record());
#                                 done(ok, detail) later, exactly once
#   deliver(topic, data, src, mod)  an event its modules subscribe to
#   stats() -> {name: int}
#
# A native engine gets the same board services a proxy uses: board.emit()
# for a module's emits (checked against its manifest), board.ports.call()
# for its calls, board.store for its package and state.

import sys

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

# Modules larger than this run in proxy mode even when native is possible:
# wasm3 needs the wasm plus its compiled code in RAM.
_NATIVE_MAX_WASM = const(16384)


def select(board, rec):
    """The engine for module record `rec`: native when the firmware has
    wasm3, the module fits the budget and the board allows it, else proxy.
    node/board/native.py decides whether native is possible: wasm3.mpy
    present, and room in the heap for its machine code (issue 7,
    docs/NATIVE.md).  Needed once per module start: this module unloads
    itself here (its caller keeps only the engine), ~400 B less heap."""
    sys.modules.pop("node.board.engine", None)
    pkg = sys.modules.get("node.board")
    if pkg is not None and hasattr(pkg, "engine"):
        delattr(pkg, "engine")
    if board.cfg.get("engine", "auto") != "proxy" and rec["size"] <= board.cfg.get(
            "native_max_wasm", _NATIVE_MAX_WASM):
        try:
            from node.board import native
            ok = native.available()
        except ImportError:
            ok = False
        if ok:
            if board.native is None:
                board.native = native.NativeEngine(board)
            return board.native
    return board.proxy
