"""`make demo` end to end: it must keep working for a new user."""
import os
import subprocess
import sys

from conftest import ROOT


def test_demo_runs_and_loses_nothing():
    r = subprocess.run([sys.executable, "-m", "host_sim.demo"], cwd=ROOT, capture_output=True,
                       text=True, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "none lost or handled twice" in out
    assert "counter@2.0.0" in out
    assert os.path.exists(os.path.join(ROOT, "demo-run", "gateway.log"))
