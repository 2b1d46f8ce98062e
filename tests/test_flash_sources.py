"""Which source files `aegis flash` puts on a board (node/flash.py
board_sources): everything board code imports, also lazily from a function
body, but the CPython-only files reached only through imports a board never
runs (flash.HOST_ONLY): they would only cost flash and bundle bytes, and
one that a board did import at load time would fail there."""
import ast
import os

from conftest import ROOT
from node import flash


def _top_level_imports(rel):
    """Modules imported by `rel` when it loads: module-level import
    statements outside try/if blocks (those are the guarded, host-only ones)."""
    with open(os.path.join(ROOT, rel)) as f:
        tree = ast.parse(f.read(), rel)
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            out.update([node.module] + [node.module + "." + a.name for a in node.names])
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_host_only_files_are_not_flashed_and_nothing_flashed_needs_them():
    srcs = flash.board_sources()
    for rel in flash.HOST_ONLY:
        assert os.path.exists(os.path.join(ROOT, rel)), "stale HOST_ONLY entry " + rel
        assert rel not in srcs, rel
    # Lazily imported but needed on the board: still flashed.
    for rel in ("node/core/transfer_recv.py", "node/core/transfer_send.py",
                "node/board/verify.py", "node/board/rtslot.py"):
        assert rel in srcs, rel
    host = {rel[:-3].replace("/", ".") for rel in flash.HOST_ONLY}
    for rel in srcs:
        assert not _top_level_imports(rel) & host, "%s imports a host-only module" % rel
