"""`aegis pack`: a signed package from a .wasm or a module.toml, and what
pack does to a module before signing it (memory cap, metering)."""
import os

from node.cli.common import die, read_or_die


def prepare_wasm(wasm, memory_pages):
    """Cap the module's memory at `memory_pages` (memory.grow past it then
    returns -1) and meter it (docs/METERING.md).  Raises ValueError
    (MeteringError) for wasm the pass cannot meter."""
    from node.core import memcap, metering
    return metering.instrument(memcap.cap_memory(wasm, memory_pages))


def cmd_pack(args):
    from node import keys
    from node.core import package as pk
    from node.core.imports import check_module
    limits = {}
    if args.wasm.endswith(".toml"):
        _pack_from_toml(args, limits)
    if not args.name or not args.version:
        die("pack needs --name and --version (or a module.toml that has them)", 2)
    wasm = read_or_die(args.wasm)
    if args.memory_pages is not None:
        limits["memory_pages"] = args.memory_pages
    if args.fuel is not None:
        limits["fuel"] = args.fuel
    metered = not args.no_meter
    plain = len(wasm)
    pages = limits.get("memory_pages", pk.DEFAULT_LIMITS["memory_pages"])
    try:
        if metered:  # ABI-check the module as written, then cap and meter it
            check_module(wasm, pages)
            wasm = prepare_wasm(wasm, pages)
        m = pk.make_manifest(args.name, args.version, wasm, args.subscribe or [],
                             args.emit or [], args.port or [], limits, metered=metered)
        check_module(wasm, m["limits"]["memory_pages"], metered)
        sign, raw = keys.signer(keys.load_private(args.key))
        data = pk.build(m, wasm, sign, raw)
    except ValueError as e:
        die("cannot pack %s: %s" % (args.wasm, e), 1)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.out)
    print("packed %s@%s: %d bytes wasm (%s), %d bytes package -> %s"
          % (args.name, args.version, plain,
             "metered: %d bytes, fuel %d per call" % (len(wasm), m["limits"]["fuel"])
             if metered else "NOT metered", len(data), args.out))


def _pack_from_toml(args, limits):
    """Fill pack's arguments from a module.toml (see docs/ABI.md); options
    given on the command line win over the file."""
    import tomllib
    path = args.wasm
    try:
        with open(path, "rb") as f:
            t = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        die("cannot read %s: %s" % (path, e), 2)
    if not isinstance(t.get("wasm"), str):
        die("%s: needs wasm = \"FILE.wasm\" (relative to the toml)" % path, 2)
    args.wasm = os.path.join(os.path.dirname(path), t["wasm"])
    for key, attr in (("name", "name"), ("version", "version"), ("subscribe", "subscribe"),
                      ("emit", "emit"), ("ports", "port")):
        if getattr(args, attr) is None and key in t:
            setattr(args, attr, t[key])
    lim = t.get("limits", {})
    if not isinstance(lim, dict):
        die("%s: [limits] must be a table" % path, 2)
    from node.core.package import DEFAULT_LIMITS
    unknown = sorted(set(lim) - set(DEFAULT_LIMITS))
    if unknown:
        die("%s: unknown limits %s (known: %s)" % (path, ", ".join(unknown),
                                                   ", ".join(sorted(DEFAULT_LIMITS))), 2)
    limits.update(lim)
