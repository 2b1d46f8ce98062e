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
    # The mesh act: one push to the group (with progress), then every
    # node's events counted on the broker by a plain subscriber, exactly.
    assert "pushing zigstats@1.0.0" in out and "100% [####################]" in out
    for node in ("demo-gw", "sim-1", "sim-2", "sim-3"):
        assert "%s: zigstats@1.0.0 running" % node in out
        assert "%-10s %3d readings in, %3d zigstats@1.0.0 events on the broker" \
            % (node, 40, 40) in out
    assert "every node's events arrived in the mesh exactly once (160 events, 0 duplicates)" \
        in out
    assert os.path.exists(os.path.join(ROOT, "demo-run", "gateway.log"))
