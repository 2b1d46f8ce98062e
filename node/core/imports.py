# Checking a module's imports and exports against ABI v1 before loading.
from node.core import wasmparse
from node.core.abi import IMPORTS

MODULE = "aegis"


class AbiError(ValueError):
    pass


def check_module(wasm, memory_pages, metered=False):
    """Parse `wasm` and check it against ABI v1 and the memory limit.
    `metered`: the signed manifest says the module is metered, so its one
    `metering.usegas` import is allowed (node/core/meterverify.py checks
    how it is used).  Returns (ModuleInfo, [imported ABI names]).
    Raises ValueError."""
    info = wasmparse.parse(wasm)
    names = []
    for mod, nm, kind, detail in info.imports:
        if mod == "metering":
            if not metered:
                raise AbiError("module imports metering.%s but its manifest does not "
                               "say it is metered" % nm)
            continue    # meterverify checks name, type and use
        if mod != MODULE or nm not in IMPORTS or kind != wasmparse.KIND_FUNC:
            raise AbiError("module imports %s.%s, which is not in ABI v1"
                               % (mod, nm))
        params, results, _ = IMPORTS[nm]
        if info.types[detail] != (params, results):
            raise AbiError("import aegis.%s has signature %s -> %s, ABI v1 says %s -> %s"
                               % (nm, info.types[detail][0], info.types[detail][1],
                                  params, results))
        names.append(nm)
    mem = info.exports.get("memory")
    if mem is None or mem[0] != wasmparse.KIND_MEMORY or info.memory is None:
        raise AbiError("module must define and export its memory as 'memory'")
    lo, hi = info.memory
    if lo > memory_pages:
        raise AbiError("module needs %d memory pages, its limit is %d"
                           % (lo, memory_pages))
    ev = info.exports.get("aegis_event")
    if ev is not None:
        if ev[0] != wasmparse.KIND_FUNC or info.func_sig(ev[1]) != (("i32",) * 4, ("i32",)):
            raise AbiError("export aegis_event must be (i32 i32 i32 i32) -> i32")
        al = info.exports.get("aegis_alloc")
        if al is None or al[0] != wasmparse.KIND_FUNC or info.func_sig(al[1]) != (("i32",), ("i32",)):
            raise AbiError("a module exporting aegis_event must export aegis_alloc(i32) -> i32")
    st = info.exports.get("aegis_start")
    if st is not None and (st[0] != wasmparse.KIND_FUNC or info.func_sig(st[1]) != ((), ("i32",))):
        raise AbiError("export aegis_start must be () -> i32")
    sp = info.exports.get("aegis_stop")
    if sp is not None and (sp[0] != wasmparse.KIND_FUNC or info.func_sig(sp[1])[0] != ()):
        raise AbiError("export aegis_stop must take no arguments")
    return info, names
