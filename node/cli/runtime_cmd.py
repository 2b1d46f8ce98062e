"""`aegis push-runtime`: update MicroPython boards' runtime over the mesh.

Builds the runtime as `aegis flash` does for the board type, signs it as a
runtime bundle with the operator's key, streams it to each board with the
push protocol (resumable, progress), and exits 0 only once every board
reports the new runtime version in its retained status
(docs/BOARDS.md "Runtime updates over the mesh")."""
import os
import sys

from node.cli.common import die, die_broker, read_or_die


def cmd_push_runtime(args):
    from node import rtbuild
    from node.cli.main import _tls
    from node.flash import FlashError

    def log(m):
        print(m, file=sys.stderr, flush=True)
    try:
        if args.bundle:
            data = read_or_die(args.bundle)
        elif not args.board or not args.sign_key:
            die("push-runtime needs --board NAME and --sign-key PREFIX.key (or --bundle FILE)", 2)
        else:
            log("building runtime %s for %s" % (args.version or "(this tree's version)",
                                                args.board))
            data = rtbuild.build_bundle(args.board, args.sign_key, args.version, log)
        hdr = rtbuild.read_bundle(data)
    except (rtbuild.RuntimeError_, FlashError, ValueError, OSError) as e:
        die(str(e), 2)
    m = hdr.manifest
    if args.save:
        with open(args.save + ".tmp", "wb") as f:
            f.write(data)
        os.replace(args.save + ".tmp", args.save)
        log("wrote %s (runtime %s for %s)" % (args.save, m["version"], m["board"]))
    if not args.to:
        if not args.save:
            die("nothing to do: give --to NODE|group:NAME (and --broker), or --save FILE", 2)
        return
    if not args.broker:
        die("push-runtime --to needs --broker URL", 2)
    from node.mqtt.push import PushError, push
    tls = _tls(args)
    try:
        _check_targets(args, tls, m["board"])
        _, res = push(args.broker, args.fleet, data, args.to, chunk=args.chunk or 4096,
                      window=args.window or 16, timeout_s=args.timeout, log=log, tls=tls,
                      hdr=hdr)
        sent = [n for n in sorted(res) if res[n][0] and "already active" not in res[n][1]]
        if sent:
            log("waiting for %s to restart with runtime %s" % (", ".join(sent), m["version"]))
            back = rtbuild.wait_runtime(args.broker, args.fleet, sent, m["version"],
                                        args.boot_timeout, log, tls)
    except (PushError, ValueError, ConnectionError) as e:
        die_broker(e)
    bad = 0
    for node in sorted(res):
        ok, detail = res[node][:2]
        if ok and node in sent:
            ok, detail = back[node]
        if ok:
            print("%s: runtime %s: %s" % (node, m["version"], detail))
        else:
            bad += 1
            print("aegis: %s: runtime %s not running: %s" % (node, m["version"], detail),
                  file=sys.stderr)
    if bad:
        sys.exit(1)


def _check_targets(args, tls, board):
    """Only boards of the bundle's type: a gateway would refuse the bundle
    as a bad package, another board type as built for another board."""
    from node.mqtt.operator import fleet_status
    nodes, _ = fleet_status(args.broker, args.fleet, **tls)
    if args.to.startswith("group:"):
        g = args.to[6:]
        ids = sorted(n for n, s in nodes.items() if s["online"] and g in s["groups"])
    else:
        ids = [args.to] if args.to in nodes else []
    wrong = ["%s (%s)" % (n, nodes[n].get("board") or "a gateway") for n in ids
             if nodes[n].get("board") != board]
    if wrong:
        die("the runtime is built for %s boards, not for %s: push to nodes of one board type"
            % (board, ", ".join(wrong)), 2)
    old = [n for n in ids if not isinstance(nodes[n].get("runtime"), dict)]
    if old:
        die("%s run(s) a runtime without updates over the mesh: flash it over serial once "
            "(aegis flash)" % ", ".join(old), 2)


def add_parser(cmd, broker_args):
    s = cmd("push-runtime", cmd_push_runtime,
            "update MicroPython boards' runtime over MQTT; exits 0 once every target "
            "reports the new version")
    s.add_argument("--board", help="board type to build for (pico_w, esp32, esp32c3, unix)")
    s.add_argument("--sign-key", metavar="PREFIX.key", help="operator key the boards trust "
                   "(--key is the mqtts client key, as for push)")
    s.add_argument("--version", help="runtime version (semver, default this tree's); boards "
                   "refuse an older one than they run")
    s.add_argument("--bundle", metavar="FILE", help="push this signed bundle instead of building")
    s.add_argument("--save", metavar="FILE", help="also write the signed bundle here")
    s.add_argument("--to", metavar="NODE_ID|group:NAME", help="target board or group")
    broker_args(s, False)
    s.add_argument("--chunk", type=int, default=None,
                   help="chunk bytes (default 4096; a board's advertised max wins if smaller)")
    s.add_argument("--window", type=int, default=None, help="chunks in flight per board")
    s.add_argument("--timeout", type=float, default=600.0,
                   help="give up the transfer after SECONDS (default 600)")
    s.add_argument("--boot-timeout", type=float, default=300.0,
                   help="how long a board may take to come back with the new runtime "
                   "(default 300 s)")
