"""Property-based fuzzing of every parser that takes bytes from outside the
node (issue 5, item 6), beside tests/test_fuzz_mesh.py (envelopes,
transfer messages) and tests/test_metering_wasm3.py (the metering pass).

Packages and manifests, rollback statements, the metered-code verifier
and the memory cap, CBOR, and CBOR/any bytes handed to the example modules
through the real host.  No input may raise anything but the parser's own
error, crash the node, or change what its store holds."""
import os
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import Signer, example, read, MODULES
from node import keys
from node.core import cbor, memcap, metering, meterverify, package as pk, rollback as rb
from node.host import InstallError, ModuleHost
from node.store import DirStore

# AEGIS_FUZZ_EXAMPLES=5000 for a longer hunt; the suite keeps it short.
FAST = settings(max_examples=int(os.environ.get("AEGIS_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 64) + 1, (1 << 64) - 1)
    | st.floats(allow_nan=True) | st.binary(max_size=40) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=6),
    max_leaves=10)


class World:
    """One signer and one host on a real DirStore, shared by the examples
    (hypothesis runs many inputs per test; a host per input is too slow)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="aegis-fuzz-")
        self.signer = Signer(os.path.join(self.dir, "ops"))
        self.host = ModuleHost(DirStore(os.path.join(self.dir, "store")), "n1",
                               keys.load_verifiers([self.signer.pub]))
        self.good = self.signer.example("counter", version="2.0.0")
        self.host.install(self.good)
        self.v1 = self.signer.example("counter", version="1.0.0")

    def snapshot(self):
        st = self.host.store
        return {k: st.read(k) for k in sorted(st.list("modules/") + st.list("packages/"))}

    def intact(self, before):
        m = self.host.modules["counter"]
        assert m.active is not None and m.active.version == "2.0.0"
        assert self.snapshot() == before


_world = []


def world():
    if not _world:
        _world.append(World())
    return _world[0]


def mutate(b, muts):
    b = bytearray(b)
    for pos, val, how in muts:
        pos %= len(b) + 1
        if how == "s" and pos < len(b):
            b[pos] = val
        elif how == "i":
            b[pos:pos] = bytes([val])
        elif how == "t":
            del b[pos:]
        elif pos < len(b):
            del b[pos]
    return bytes(b)


MUTS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255), st.sampled_from("sidt")),
                min_size=1, max_size=4)


@FAST
@given(st.binary(max_size=400))
def test_package_header_any_bytes(b):
    for data in (b, pk.MAGIC + b, pk.MAGIC + len(b).to_bytes(4, "big") + b):
        try:
            pk.parse_header(data)
        except pk.PackageError:
            pass


@FAST
@given(MUTS)
def test_mutated_packages_refused_store_intact(muts):
    w = world()
    before = w.snapshot()
    data = mutate(w.good, muts)
    try:
        r = w.host.install(data)
    except InstallError:
        pass
    else:
        # Only a mutation that left the signed bytes whole can pass: then it
        # is the same package, a no-op.
        assert r["changed"] is False
    w.intact(before)


@FAST
@given(st.dictionaries(st.sampled_from(["abi", "name", "version", "sha256", "size", "subscribe",
                                        "emit", "ports", "limits", "metered", "x"]),
                       plain, max_size=11), st.booleans())
def test_signed_junk_manifests_refused(fields, from_good):
    """A validly signed manifest with junk fields: a clear refusal."""
    w = world()
    before = w.snapshot()
    m = dict(pk.parse_header(w.good).manifest) if from_good else {}
    m.update(fields)
    wasm = w.good[pk.parse_header(w.good).wasm_offset:]
    try:
        mb = cbor.dumps(m)
    except cbor.CBORError:
        return
    hdr = cbor.dumps({"manifest": mb, "sig": w.signer.sign(mb), "kid": pk.key_id(w.signer.raw)})
    try:
        pk.check_manifest(m)
    except pk.PackageError:
        pass
    try:
        w.host.install(pk.MAGIC + len(hdr).to_bytes(4, "big") + hdr + wasm)
    except InstallError:
        pass
    w.intact(before)


@FAST
@given(st.binary(max_size=300), MUTS)
def test_rollback_statements(b, muts):
    w = world()
    before = w.snapshot()
    # Dated 1970: even untouched it is refused (expired), so nothing may change.
    good = rb.make("counter", "2.0.0", "1.0.0", w.signer.sign, w.signer.raw, b"n" * 16, 0)
    for data in (b, rb.MAGIC + b, mutate(good, muts)):
        try:
            w.host.rollback(data)
        except InstallError:
            pass
    w.intact(before)


@FAST
@given(st.binary(max_size=300), MUTS)
def test_removal_statements(b, muts):
    from node.admission import apply_remove
    w = world()
    before = w.snapshot()
    good = rb.make_remove("counter", "2.0.0", w.signer.sign, w.signer.raw, b"n" * 16, 0)
    for data in (b, rb.MAGIC + b, mutate(good, muts)):
        rb.peek_op(data)            # unverified dispatch: must never raise
        try:
            apply_remove(w.host, data)
        except (InstallError, ValueError):
            pass
    w.intact(before)


VALID = [metering.instrument(memcap.cap_memory(read(os.path.join(MODULES, n, f)), 16))
         for n, f in (("counter", "counter.wasm"), ("threshold", "threshold.wasm"),
                      ("zigstats", "zigstats.wasm"))]


@FAST
@given(st.sampled_from(range(len(VALID))), MUTS)
def test_meterverify_and_memcap_mutated(which, muts):
    b = mutate(VALID[which], muts)
    try:
        meterverify.verify(b)
    except meterverify.VerifyError:
        pass
    try:
        memcap.cap_memory(b, 4)
    except ValueError:
        pass


@FAST
@given(st.binary(max_size=300))
def test_meterverify_and_memcap_any_bytes(b):
    for data in (b, b"\x00asm\x01\x00\x00\x00" + b):
        try:
            meterverify.verify(data)
        except meterverify.VerifyError:
            pass
        try:
            memcap.cap_memory(data, 4)
        except ValueError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_cbor_loads_any_bytes(b):
    try:
        v = cbor.loads(b)
    except cbor.CBORError:
        return
    assert cbor.loads(cbor.dumps(v)) == v or v != v   # NaN is not equal to itself


class Modules:
    """Every example module on one host (metered, as packed by default)."""

    def __init__(self):
        d = tempfile.mkdtemp(prefix="aegis-fuzz-mods-")
        s = Signer(os.path.join(d, "ops"))
        self.host = h = ModuleHost(DirStore(os.path.join(d, "store")), "n1",
                                   keys.load_verifiers([s.pub]))
        h.ports = {"facts": lambda host, data: cbor.dumps({"asked": data})}
        for name, toml in (("counter", "module.toml"), ("threshold", "module.toml"),
                           ("movavg", "module.toml"), ("facts", "module.toml"),
                           ("zigstats", "module.toml")):
            t, wasm = example(name, toml)
            h.install(s.pack(t["name"], t["version"], wasm, t["subscribe"], t["emit"],
                             t.get("ports", [])))


_mods = []

TOPICS = st.sampled_from(["sensor/a/temp", "config/threshold", "facts/request", "sensor/x"])


@FAST
@given(TOPICS, st.one_of(st.binary(max_size=120), plain.map(
    lambda v: cbor.dumps(v) if not isinstance(v, float) or v == v else b"\xf9\x7e\x00")))
def test_any_event_data_to_every_example_module(topic, data):
    """Modules are handed any bytes a sender can produce: none may trap,
    and the node keeps delivering."""
    if not _mods:
        _mods.append(Modules())
    h = _mods[0].host
    h.publish(topic, data)
    h.pump()
    for mod in h.modules.values():
        assert mod.active is not None and mod.active.traps == 0, mod.active.info()
