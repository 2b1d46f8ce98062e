"""`aegis ca init` / `aegis ca issue`: a fleet CA and certificates under it."""
import os
import stat

from cryptography import x509

from gateway_proc import cli
from node import ca


def load(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def test_init_and_issue_via_cli(tmp_path):
    d = str(tmp_path / "ca")
    r = cli("ca", "init", "--out", d, "--fleet", "lab")
    assert "fleet CA for 'lab'" in r.stdout
    prefix = str(tmp_path / "gw1")
    cli("ca", "issue", "gw1", "--ca", d, "--out", prefix, "--ip", "127.0.0.1", "::1")
    leaf, root = load(prefix + ".crt"), load(prefix + ".ca.crt")
    leaf.verify_directly_issued_by(root)
    assert ca.common_name(leaf) == "gw1"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert stat.S_IMODE(os.stat(prefix + ".key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(d, "ca.key")).st_mode) == 0o600


def test_other_fleet_does_not_verify_and_errors_are_clear(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ca.init(a, "fleet-a")
    ca.init(b, "fleet-b")
    ca.issue("n1", a, str(tmp_path / "n1"))
    try:
        load(str(tmp_path / "n1.crt")).verify_directly_issued_by(load(os.path.join(b, "ca.crt")))
        raise AssertionError("a certificate of fleet a verified under fleet b")
    except (ValueError, Exception) as e:
        assert not isinstance(e, AssertionError)
    r = cli("ca", "init", "--out", a, check=False)
    assert r.returncode == 2 and "exists" in r.stderr
    r = cli("ca", "issue", "bad name", "--ca", a, "--out", str(tmp_path / "x"), check=False)
    assert r.returncode == 2 and "certificate name" in r.stderr
    r = cli("ca", "issue", "n2", "--ca", str(tmp_path / "none"), "--out", str(tmp_path / "x"),
            check=False)
    assert r.returncode == 2 and "no fleet CA" in r.stderr
