# The metering pass on the portable core (CPython and MicroPython).
from node.core import metering, wasmparse
from node.core.metering import MeteringError, instrument, is_metered
from helpers import TINY_WASM, raises

# (module (func $a) (func $b (call $a)) (table 2 funcref) (elem (i32.const 0) $a $b)
#  (start $a) (export "b" (func $b))): no imports, an element segment, a start.
NO_IMPORTS = bytes.fromhex(
    "0061736d010000000104016000000303020000040401700002070501016200010801"
    "000908010041000b0200010a090202000b040010000b")


def test_tiny_module_gets_the_import_and_still_parses():
    out = instrument(TINY_WASM)
    info = wasmparse.parse(out)
    assert info.imports[0] == ("aegis", "emit", 0, 0)
    mod, nm, kind, ti = info.imports[1]
    assert (mod, nm, kind) == ("metering", "usegas", 0)
    assert info.types[ti] == (("i32",), ())
    assert info.n_func_imports == 2
    assert is_metered(out) and not is_metered(TINY_WASM)


def test_exports_keep_names_and_follow_the_shift():
    before = wasmparse.parse(TINY_WASM)
    after = wasmparse.parse(instrument(TINY_WASM))
    assert set(after.exports) == set(before.exports)
    for name, (kind, idx) in before.exports.items():
        k2, i2 = after.exports[name]
        assert k2 == kind
        if kind == wasmparse.KIND_FUNC:
            # defined functions moved up by one; their signature did not change
            assert i2 == idx + 1
            assert after.func_sig(i2) == before.func_sig(idx)
        else:
            assert i2 == idx


def test_calls_are_renumbered():
    out = instrument(TINY_WASM)
    # aegis_event calls import 0 (emit): unchanged, and charged as a host call.
    assert b"\x10\x00" in out
    # The usegas import is function 1 and is called with an i32.const.
    assert b"\x10\x01" in out


def test_start_elements_and_exports_without_prior_imports():
    out = instrument(NO_IMPORTS)
    info = wasmparse.parse(out)
    assert info.imports[0][:3] == ("metering", "usegas", 0)
    assert info.exports["b"] == (0, 2)
    # start section: id 8, size 1, function 1 (was 0)
    assert b"\x08\x01\x01" in out
    # element segment now lists functions 1 and 2
    assert b"\x41\x00\x0b\x02\x01\x02" in out


def test_already_metered_is_refused():
    e = raises(MeteringError, instrument, instrument(TINY_WASM))
    assert "metering" in str(e)


def test_every_truncation_is_a_metering_error():
    for src in (TINY_WASM, NO_IMPORTS):
        for i in range(len(src)):
            try:
                instrument(src[:i])
            except MeteringError:
                continue
            # a cut at a section boundary is a smaller valid module
            wasmparse.parse(src[:i])


def test_garbage_and_unsupported_features():
    for b in [b"", b"\x00asm", b"\x00asm\x02\x00\x00\x00", b"junkjunkjunk",
              b"\x00asm\x01\x00\x00\x00\x01\xff\xff\xff\xff\x0f",
              b"\x00asm\x01\x00\x00\x00\x0d\x00"]:          # tag section
        raises(MeteringError, instrument, b)
    # (func) whose body uses a SIMD / atomics / try opcode
    for body in (b"\xfd\x0c", b"\xfe\x00", b"\x06\x40"):
        code = b"\x00" + body + b"\x0b"
        mod = (b"\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00"
               + b"\x0a" + bytes([len(code) + 2, 1, len(code)]) + code)
        e = raises(MeteringError, instrument, mod)
        assert "not supported" in str(e), e


def test_bad_indices_are_refused():
    # (func (call 5)): calls a function that does not exist
    code = b"\x00\x10\x05\x0b"
    mod = (b"\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00"
           + b"\x0a\x06\x01\x04" + code)
    raises(MeteringError, instrument, mod)


def test_cost_function_is_used_and_checked():
    costs = []

    def cost(op):
        costs.append(op)
        return 1000
    out = instrument(TINY_WASM, cost)
    assert metering.OP_CALL_HOST in costs
    # 1000 * n instructions + BLOCK_COST as a signed LEB128 i32.const
    assert out != instrument(TINY_WASM)
    raises(MeteringError, instrument, TINY_WASM, lambda op: -1)


def test_set_budget_resets_the_limit():
    class M:
        gasUsed = 0.0
        gasLimit = 0.0
    m = M()
    metering.set_budget(m, 20000)
    assert m.gasLimit == 2.0
    m.gasUsed = 5.0   # an engine that does not reset gasUsed on a new limit
    metering.set_budget(m, 10000)
    assert m.gasLimit == 6.0
