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

# Modules larger than this run in proxy mode even when native is possible:
# wasm3 needs the wasm plus its compiled code in RAM.
NATIVE_MAX_WASM = 16384


def native_available():
    # node/board/native.py decides: wasm3.mpy present, and room in the heap
    # for its machine code (issue 7, docs/NATIVE.md).
    try:
        from node.board import native
    except ImportError:
        return False
    return native.available()


def select(board, rec):
    """The engine for module record `rec`: native when the firmware has
    wasm3, the module fits the budget and the board allows it, else proxy."""
    if board.cfg.get("engine", "auto") != "proxy" and rec["size"] <= board.cfg.get(
            "native_max_wasm", NATIVE_MAX_WASM) and native_available():
        if board.native is None:
            from node.board import native  # type: ignore[attr-defined]
            board.native = native.NativeEngine(board)
        return board.native
    return board.proxy
