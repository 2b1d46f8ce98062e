"""What `aegis flash` checks before it changes anything on the board.

The firmware (node/flash_fw.py): firmware that cannot load the runtime's
.mpy files, or firmware for another architecture than --board names, stops
the flash with a clear error, on a real MicroPython Unix port behind a pty.
The config: keys a board does not use are reported and left out."""
import os

import pytest

from conftest import Signer
from host_sim.boards import UnixBoard
from node import flash, flash_fw


@pytest.fixture
def board(tmp_path):
    b = UnixBoard("fw-1", tmp_path / "board", "mqtt://127.0.0.1:1",
                  [Signer(str(tmp_path / "op")).pub]).start()
    yield b
    b.stop()


def _flash(board, tmp_path, log=lambda *a: None):
    return flash.flash("unix", board.pty, board.config, build_dir=str(tmp_path / "build"),
                       start=False, log=log)


def test_firmware_too_old_for_the_runtime_stops_the_flash(board, tmp_path, monkeypatch):
    # This binary is MicroPython 1.29; a runtime needing 9.0 stands in for a
    # board whose firmware is older than what the runtime uses.
    monkeypatch.setattr(flash_fw, "MIN_VERSION", (9, 0))
    with pytest.raises(flash.FlashError) as e:
        _flash(board, tmp_path)
    msg = str(e.value)
    assert "runs MicroPython 1.29.0 (.mpy format 6); the runtime needs MicroPython 9.0 " \
           "or newer" in msg, msg
    assert "docs/BOARDS.md" in msg
    assert not os.listdir(board.work)        # nothing was copied


def test_firmware_that_cannot_load_wasm3_is_flashed_with_a_note(board, tmp_path, monkeypatch):
    # wasm3.mpy (machine code) needs the exact .mpy sub-version: one other
    # than this binary's stands in for such firmware.  The runtime's own
    # .mpy files are bytecode and load anyway: the board runs proxy mode.
    monkeypatch.setattr(flash_fw, "MPY_SUB", 2)
    said = []
    _flash(board, tmp_path, log=said.append)
    assert os.path.exists(os.path.join(board.work, "main.py"))
    notes = [x for x in said if "wasm3.mpy's (6.2)" in x]
    assert notes and "every module in proxy mode" in notes[0], said


def test_firmware_for_another_arch_stops_the_flash_before_the_romfs_probe(board, tmp_path,
                                                                          monkeypatch):
    # A Pico W definition on a board whose firmware is x64; as a partition
    # board, the check runs in the ROMFS probe's session, before any write.
    real = flash.load_board

    def pico_like(name):
        b = dict(real(name), mpy_arch="armv6m", romfs="partition")
        return b
    monkeypatch.setattr(flash, "load_board", pico_like)
    with pytest.raises(flash.FlashError) as e:
        _flash(board, tmp_path)
    msg = str(e.value)
    assert "runs firmware for x64, but --board unix is armv6m" in msg, msg
    assert not os.listdir(board.work)


def test_the_check_explains_only_its_own_errors_and_reads_newer_mpy_flags():
    unix = flash.load_board("unix")
    code = flash_fw.check_code(unix)
    assert "a not in(0,2)" in code and "<(1, 23)" in code
    assert flash_fw.explain("mpremote failed (1): no device", unix, "/dev/x") is None
    assert flash_fw.explain("OSError: AEGIS-FW junk", unix, "/dev/x") is None
    old = flash_fw.explain("OSError: AEGIS-FW %d 1.22.2\n" % (6 | 2 << 8 | 4 << 10), unix, "/x")
    assert "runs MicroPython 1.22.2 (.mpy format 6); the runtime needs MicroPython 1.23" in old
    # MicroPython 1.27+ sets flags above bit 15: the architecture is bits 10-15.
    rv = 6 | (3 | 11 << 2) << 8 | 1 << 16
    assert "firmware for rv32imc, but --board unix is x64" in flash_fw.explain(
        "OSError: AEGIS-FW %d 1.27.0" % rv, unix, "/x")


def test_keys_a_board_does_not_use_are_reported_and_left_out(tmp_path):
    pub = Signer(str(tmp_path / "op")).pub
    cfg = tmp_path / "node.toml"
    cfg.write_text('node_id = "b1"\nfleet = "f"\ntrusted_keys = ["%s"]\nstore_dir = "/x"\n'
                   'status_ms = 5000\n[proxy]\nboards = []\n'
                   '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\nkeep_alive = 10\nkeepalive = 20\n'
                   % pub)
    said = []
    out, _ = flash.board_config(flash.load_board("unix"), str(cfg), warn=said.append)
    assert said == ["WARNING: %s: not used on a board, left out: proxy, store_dir, "
                    "mqtt.keep_alive" % cfg]
    assert out["mqtt"] == {"url": "mqtt://127.0.0.1:1883", "keepalive": 20}
    assert out["status_ms"] == 5000 and "store_dir" not in out
