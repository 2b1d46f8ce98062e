"""wasm3 through pywasm3: the gateway's engine."""
import functools

import wasm3

from node.core.metering import GAS_UNIT
from node.engine import EngineError, Trap

STACK_BYTES = 64 * 1024


class Wasm3Instance:
    def __init__(self, env, wasm, imports):
        self.rt = env.new_runtime(STACK_BYTES)
        try:
            self.module = env.parse_module(bytes(wasm))
            self.rt.load(self.module)
        except RuntimeError as e:
            raise EngineError("wasm3 refused the module: %s" % _msg(e))
        for name, (sig, fn) in imports.items():
            try:
                self.module.link_function("aegis", name, sig, fn)
            except RuntimeError as e:
                raise EngineError("cannot link aegis.%s: %s" % (name, _msg(e)))
        self._funcs = {}
        # A C-level bound call: the cheapest way to re-fetch memory per call.
        self.memory_getter = functools.partial(self.rt.get_memory, 0)

    def find(self, name):
        f = self._funcs.get(name)
        if f is None:
            try:
                f = self.rt.find_function(name)
            except RuntimeError:
                return None
            self._funcs[name] = f
        return f

    def budget_setter(self, fuel):
        """A zero-argument callable giving a metered module `fuel` for its
        next call.  pywasm3 0.5.0 resets gasUsed whenever gasLimit is set
        (docs/METERING.md), so one attribute write per call is the whole
        per-call budget; a C-level partial keeps it cheap on the event path."""
        return functools.partial(setattr, self.module, "gasLimit", fuel / GAS_UNIT)

    def has(self, name):
        return self.find(name) is not None

    def call(self, name, *args):
        f = self.find(name)
        if f is None:
            raise EngineError("module has no export %r" % name)
        try:
            return f(*args)
        except RuntimeError as e:
            raise Trap(_msg(e))

    def memory(self):
        return self.rt.get_memory(0)


def _msg(e):
    s = str(e)
    return s[len("[trap] "):] if s.startswith("[trap] ") else s


class Wasm3Engine:
    name = "wasm3"

    def __init__(self):
        self.env = wasm3.Environment()

    def load(self, wasm, imports):
        return Wasm3Instance(self.env, wasm, imports)
