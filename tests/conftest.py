"""Shared fixtures: real Ed25519 keys, packages from the real example
modules (built by clang / wat2wasm and committed), hosts on real stores."""
import os
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from node import keys  # noqa: E402
from node.core import package as pk  # noqa: E402
from node.host import ModuleHost  # noqa: E402
from node.store import DirStore  # noqa: E402

MODULES = os.path.join(ROOT, "modules")
FIXTURES = os.path.join(ROOT, "tests", "modules")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def example(name, toml="module.toml"):
    """(manifest fields, wasm bytes) of an example module."""
    d = os.path.join(MODULES, name)
    with open(os.path.join(d, toml), "rb") as f:
        t = tomllib.load(f)
    return t, read(os.path.join(d, t["wasm"]))


class Signer:
    def __init__(self, prefix):
        keys.keygen(prefix)
        self.prefix = prefix
        self.pub = prefix + ".pub"
        self.sign, self.raw = keys.signer(keys.load_private(prefix + ".key"))

    def pack(self, name, version, wasm, subscribe=(), emit=(), ports=(), meter=True,
             **limits):
        """A signed package; metered like `aegis pack` does by default (wasm
        the pass refuses, e.g. invalid.wasm, goes in unmetered so the node's
        own refusal is what a test sees)."""
        from node.cli.packing import prepare_wasm
        metered = False
        if meter:
            try:
                wasm, metered = prepare_wasm(wasm, limits.get("memory_pages", 16)), True
            except ValueError:
                pass
        m = pk.make_manifest(name, version, wasm, subscribe, emit, ports, limits or None,
                             metered=metered)
        return pk.build(m, wasm, self.sign, self.raw)

    def example(self, name, toml="module.toml", version=None):
        t, wasm = example(name, toml)
        return self.pack(t["name"], version or t["version"], wasm, t["subscribe"],
                         t["emit"], t.get("ports", []))

    def fixture(self, fname, name="fx", version="1.0.0", subscribe=("in/#",), emit=("out/",),
                ports=(), **kw):
        return self.pack(name, version, read(os.path.join(FIXTURES, fname)),
                         subscribe, emit, ports, **kw)


@pytest.fixture
def signer(tmp_path):
    return Signer(str(tmp_path / "operator"))


class Clock:
    def __init__(self):
        self.t = 1_000_000

    def __call__(self):
        return self.t


@pytest.fixture
def make_host(tmp_path, signer):
    """make_host(store_dir=None, **kw) -> ModuleHost on a DirStore, recording
    its log lines in host.lines and every event in host.seen."""
    def make(store_dir=None, **kw):
        lines = []
        kw.setdefault("clock", Clock())
        h = ModuleHost(DirStore(store_dir or str(tmp_path / "store")), "n1",
                       keys.load_verifiers([signer.pub]),
                       logger=lambda lv, msg, **k: lines.append((lv, msg, k)), **kw)
        h.lines = lines
        h.seen = []
        h.taps.append(h.seen.append)
        return h
    return make
