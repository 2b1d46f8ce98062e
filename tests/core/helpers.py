# Shared by the portable core tests (CPython and MicroPython).
import hashlib

# (module (import "aegis" "emit" ...) (memory (export "memory") 1 4)
#  (func (export "aegis_alloc") ...) (func (export "aegis_event") ... emit))
TINY_WASM = bytes.fromhex(
    "0061736d01000000010e0260047f7f7f7f017f60017f017f020e0105616567697304656d"
    "697400000303020100050401010104072603066d656d6f727902000b61656769735f616c"
    "6c6f6300010b61656769735f6576656e7400020a140205004180080b0c00200020012002"
    "200310000b")
# (module (import "env" "system" (func (param i32) (result i32))) (memory (export "memory") 1))
BAD_IMPORT_WASM = bytes.fromhex(
    "0061736d0100000001060160017f017f020e0103656e760673797374656d0000050301"
    "0001070a01066d656d6f72790200")


def raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %s" % (exc.__name__, fn))


# A stand-in signature scheme for the portable tests: the core takes the
# verifier as a callable, so what it checks is the wiring, not Ed25519
# (real Ed25519 runs in the CPython integration tests).
class SigKey:
    def __init__(self, secret):
        self.secret = secret
        self.raw_pub = hashlib.sha256(b"pub" + secret).digest()

    def sign(self, msg):
        h = hashlib.sha256(self.secret + msg).digest()
        return h + h

    def verify(self, sig, msg):
        return sig == self.sign(msg)
