"""The board code type-checks against the MicroPython stubs of the boards
it ships to (Pico W's rp2 port and ESP32), with mypy: a call to something
the firmware does not have (time.monotonic, int.bit_length, os.pwrite...)
fails here instead of on a board.  `make setup` installs the stubs into
.venv/stubs/<board>/ (tests/mypy_board.ini has the settings)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUBS = os.path.join(os.path.dirname(os.path.dirname(sys.executable)), "stubs")
SOURCES = ["node/board/", "firmware/main.py", "firmware/rtboot.py"]


@pytest.mark.parametrize("board", ["pico_w", "esp32"])
def test_board_code_typechecks_against_micropython_stubs(board, tmp_path):
    stubs = os.path.join(STUBS, board)
    assert os.path.exists(os.path.join(stubs, "stdlib", "VERSIONS")), \
        "MicroPython stubs missing in %s: run `make setup`" % stubs
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "tests/mypy_board.ini",
                        "--custom-typeshed-dir", stubs, "--cache-dir", str(tmp_path / "cache"),
                        *SOURCES], cwd=ROOT, capture_output=True, text=True, timeout=280,
                       env=dict(os.environ, MYPYPATH=stubs))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout


def test_typecheck_catches_a_cpython_only_call(tmp_path):
    """The check is real: CPython-only API is an error under the stubs."""
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nprint(time.monotonic())\nprint((5).bit_length())\n")
    stubs = os.path.join(STUBS, "pico_w")
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "tests/mypy_board.ini",
                        "--custom-typeshed-dir", stubs, "--cache-dir", str(tmp_path / "cache"),
                        str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=280,
                       env=dict(os.environ, MYPYPATH=stubs))
    assert r.returncode == 1
    assert 'Module has no attribute "monotonic"' in r.stdout
