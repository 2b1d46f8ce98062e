"""`aegis pack` from a module.toml: fields, [limits], overrides, errors."""
import os

from gateway_proc import cli
from node.core.package import parse_header


def _manifest(path):
    with open(path, "rb") as f:
        return parse_header(f.read()).manifest


def test_pack_from_module_toml(tmp_path, signer):
    d = tmp_path / "m"
    d.mkdir()
    wasm = os.path.join(os.path.dirname(__file__), "..", "modules", "threshold", "threshold.wasm")
    with open(wasm, "rb") as f:
        (d / "t.wasm").write_bytes(f.read())
    (d / "module.toml").write_text(
        'name = "thr"\nversion = "1.2.3"\nwasm = "t.wasm"\nsubscribe = ["sensor/#"]\n'
        'emit = ["alarm/"]\nports = ["facts"]\n[limits]\nfuel = 12345\nmemory_pages = 4\n')
    out = str(tmp_path / "t.pkg")
    r = cli("pack", str(d / "module.toml"), "--key", signer.prefix + ".key", "--out", out)
    assert "thr@1.2.3" in r.stdout
    m = _manifest(out)
    assert (m["name"], m["version"], m["subscribe"], m["emit"], m["ports"]) == \
        ("thr", "1.2.3", ["sensor/#"], ["alarm/"], ["facts"])
    assert m["limits"]["fuel"] == 12345 and m["limits"]["memory_pages"] == 4
    # The command line wins over the file.
    cli("pack", str(d / "module.toml"), "--version", "2.0.0", "--emit", "x/",
        "--key", signer.prefix + ".key", "--out", out)
    m = _manifest(out)
    assert m["version"] == "2.0.0" and m["emit"] == ["x/"] and m["name"] == "thr"


def test_pack_toml_errors_are_clear(tmp_path, signer):
    key = signer.prefix + ".key"
    bad = tmp_path / "bad.toml"
    cases = [
        ('name = "a"\nversion = "1.0.0"\n', "needs wasm"),
        ('wasm = "x.wasm"\nname = "a"\nversion = "1.0.0"\n[limits]\nfuell = 1\n',
         "unknown limits fuell"),
        ('name = [\n', "cannot read"),
        ('wasm = "missing.wasm"\nname = "a"\nversion = "1.0.0"\n', "cannot read"),
        ('wasm = "x.wasm"\n', "needs --name and --version"),
    ]
    for text, msg in cases:
        bad.write_text(text)
        r = cli("pack", str(bad), "--key", key, "--out", str(tmp_path / "o.pkg"), check=False)
        assert r.returncode == 2 and msg in r.stderr, (text, r.stderr)
    assert not os.path.exists(tmp_path / "o.pkg")
