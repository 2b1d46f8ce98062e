from node.core import wasmparse
from node.core.imports import AbiError, check_module
from helpers import BAD_IMPORT_WASM, TINY_WASM, raises


def test_parse_tiny_module():
    info = wasmparse.parse(TINY_WASM)
    assert info.imports == [("aegis", "emit", 0, 0)]
    assert info.memory == (1, 4)
    assert set(info.exports) == {"memory", "aegis_alloc", "aegis_event"}
    info, names = check_module(TINY_WASM, 16)
    assert names == ["emit"]


def test_forbidden_import_and_memory_limit():
    e = raises(AbiError, check_module, BAD_IMPORT_WASM, 16)
    assert "env.system" in str(e)
    # The tiny module needs 1 page at start.
    check_module(TINY_WASM, 1)


def test_garbage_is_a_clear_error():
    for b in [b"", b"\x00asm", b"\x00asm\x02\x00\x00\x00", b"junkjunkjunk",
              TINY_WASM[:20], TINY_WASM[:-3], b"\x00asm\x01\x00\x00\x00\x01\xff\xff\xff\xff\x0f"]:
        raises(ValueError, check_module, b, 16)


def test_every_truncation_is_handled():
    for i in range(len(TINY_WASM)):
        try:
            check_module(TINY_WASM[:i], 16)
        except ValueError:
            pass


def test_wrong_signature_import_refused():
    # Patch emit's type (i32 x4 -> i32) to return nothing: 0x01 0x7f -> 0x00.
    b = bytearray(TINY_WASM)
    i = bytes(b).find(bytes.fromhex("60047f7f7f7f017f"))
    b[i + 6:i + 8] = b"\x00\x00"
    raises(ValueError, check_module, bytes(b[:i + 7]) + bytes(b[i + 8:]), 16)
