"""Engines run wasm.  The interface is small on purpose, so a MicroPython
`wasm3` native module (or proxy execution on a gateway) can serve it too:

    engine.load(wasm_bytes, imports) -> Instance
        imports: {name: (signature, callable)} linked from module "aegis"
    instance.has(export) -> bool
    instance.find(export) -> callable or None (fast path; a trap raises
        RuntimeError, of which Trap is a subclass)
    instance.call(export, *args) -> result (None for no result)
        raises Trap on a wasm trap; the engine stays usable
    instance.memory() -> writable buffer of linear memory (fresh every time)
    instance.budget_setter(fuel) -> callable() that gives a metered module
        `fuel` for its next call (out of fuel is a Trap); the host calls it
        before every aegis_start / aegis_alloc / aegis_event / aegis_stop

`load` raises EngineError when wasm3 refuses the module.
"""


class EngineError(Exception):
    """The engine refused a module (invalid wasm, link failure)."""


class Trap(RuntimeError):
    """A wasm trap: unreachable, out-of-bounds access, stack overflow..."""


def default_engine():
    from node.engine.wasm3_engine import Wasm3Engine
    return Wasm3Engine()
