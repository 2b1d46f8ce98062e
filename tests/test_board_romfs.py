"""The runtime's bytecode runs in place from a ROMFS image (docs/BOARDS.md
"Flashed layout"): firmware/rommap.c maps the unix board's image outside
the heap, main.py mounts it, and a partition board whose firmware has no
ROMFS partition gets plain .mpy files instead.  All on the real MicroPython
binary; the fallback is flashed through a pty with mpremote."""
import os
import subprocess

from broker import Subscriber, broker  # noqa: F401 (fixture)
from gateway_proc import wait_for
from host_sim.boards import MICROPYTHON, UnixBoard
from node import flash, romfs
from test_board_flash import status


def mp(code, cwd, heap="192K"):
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=" + heap, "-c", code], cwd=cwd,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_rommap_maps_a_file_outside_the_heap(tmp_path):
    path = romfs.mapper()
    assert path and os.path.getsize(path) < 2048
    data = bytes(range(256)) * 256                      # 64 KiB
    (tmp_path / "img").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "rommap.mpy").write_bytes(open(path, "rb").read())
    out = mp("import gc, uctypes, rommap\n"
             "gc.collect(); a = gc.mem_alloc()\n"
             "p, n = rommap.map('img')\n"
             "b = uctypes.bytearray_at(p, n)\n"
             "gc.collect()\n"
             "print(n, gc.mem_alloc() - a, b[0], b[255], b[65535], bytes(b[1000:1004]).hex())\n"
             "for f in ('missing', 'empty'):\n"
             "    try:\n"
             "        rommap.map(f)\n"
             "    except OSError as e:\n"
             "        print(f, e.errno)\n", tmp_path)
    lines = out.split("\n")
    n, grown, b0, b255, blast, mid = lines[0].split()
    assert int(n) == 65536 and (b0, b255, blast) == ("0", "255", "255")
    assert mid == data[1000:1004].hex()
    assert int(grown) < 512             # the 64 KiB are not in the heap
    assert lines[1] == "missing 2" and lines[2] == "empty 22"     # ENOENT, EINVAL


def code_heap(board, tmp_path, name):
    """Heap after firmware/main.py imported the runtime (bench/sec_boards.py)."""
    out = tmp_path / name
    cfg = {"node_id": "n1", "fleet": "test", "trusted_keys": ["00" * 32]}
    flash.build(board, cfg, {}, str(out), log=lambda m: None)
    return int(mp("import gc\ngc.collect()\na = gc.mem_alloc()\n"
                  "exec(open('main.py').read().rsplit('runtime.main(', 1)[0])\n"
                  "import sys\nprint(sys.modules['node.board.runtime'].__file__)\n"
                  "gc.collect()\nprint(gc.mem_alloc() - a)", out).split()[-1]), out


def test_romfs_image_saves_the_bytecode_heap(tmp_path):
    board = flash.load_board("unix")
    assert board["romfs"] == "file"
    rom, out = code_heap(board, tmp_path, "rom")
    assert os.path.exists(out / "romfs.img") and not os.path.exists(out / "lib" / "node")
    plain_board = dict(board, romfs="none")
    plain, out = code_heap(plain_board, tmp_path, "plain")
    assert not os.path.exists(out / "romfs.img")
    assert os.path.exists(out / "lib" / "node" / "board" / "runtime.mpy")
    print("runtime imported: %d bytes of heap from ROMFS, %d as plain .mpy" % (rom, plain))
    assert rom < plain - 16 * 1024


def test_partition_board_without_romfs_gets_plain_files(tmp_path, broker):
    """Stock firmware (and this Unix port) has no vfs.rom_ioctl: the flash
    says so and copies plain .mpy files, and the board boots from them."""
    sub = Subscriber(broker, "aegis/test/#")
    board = UnixBoard("part-1", tmp_path / "board", broker.url, [_key(tmp_path)],
                      extra={"engine": "proxy"})
    lines = []
    try:
        board.start()
        b = dict(flash.load_board("unix"), romfs="partition")
        cfg, files = flash.board_config(b, board.config)
        flash._flash_locked("unix", b, cfg, files, board.pty, str(tmp_path / "out"), True,
                            lines.append, 0)
        board._drain()
        assert [x for x in lines if "no ROMFS partition" in x and "plain .mpy" in x], lines
        fs = tmp_path / "board" / "fs"
        assert os.path.exists(fs / "lib" / "node" / "board" / "runtime.mpy")
        assert not os.path.exists(fs / "romfs.img")
        board.wait_for("connected to broker", 60)
        wait_for(lambda: (status(sub, "part-1") or {}).get("online"), 30, "board online")
    finally:
        board.stop()
        sub.close()


def _key(d):
    from node import keys
    keys.keygen(str(d / "op"))
    return str(d / "op.pub")
