"""`aegis remove`: stop and delete a module.  Locally over the control
socket, or, with --key, as a signed removal statement for a remote node
or board (node/core/rollback.py make_remove), to publish on its MQTT
deploy topic like a rollback statement (docs/ROLLBACK.md)."""
import os
import time

from node.cli.common import die, die_broker, request


def cmd_remove(args):
    if args.key is None:
        if args.out or args.from_version or args.node != "*":
            die("--out, --from and --node sign a statement: they need --key", 2)
        request(args, "remove", name=args.name)
        print("removed %s" % args.name)
        return
    from node import keys
    from node.core import rollback as rb
    if not args.out or not args.from_version:
        die("a signed removal needs --from VERSION (active on the node now) and --out FILE", 2)
    try:
        sign, raw = keys.signer(keys.load_private(args.key))
        st = rb.make_remove(args.name, args.from_version, sign, raw, os.urandom(16),
                            time.time_ns() // 1000000, node=args.node)
    except (ValueError, OSError, keys.KeyError_) as e:
        die("cannot sign the removal: %s" % e, 2)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(st)
    os.replace(tmp, args.out)
    print("signed removal of %s@%s for node %s -> %s (valid %d h)"
          % (args.name, args.from_version, args.node, args.out, rb.MAX_AGE_MS // 3600000))


def add_parser(cmd, fn=cmd_remove):
    s = cmd("remove", fn, "stop and remove a module (here, or signed for a remote node)",
            sock=True)
    s.add_argument("name")
    s.add_argument("--key", metavar="PREFIX.key",
                   help="sign a removal statement with this trusted key (remote nodes and boards)")
    s.add_argument("--from", dest="from_version", metavar="VERSION",
                   help="the version active on the node now (the statement applies only then)")
    s.add_argument("--node", default="*", help="node id the statement is for (default any)")
    s.add_argument("--out", metavar="FILE", help="write the statement here (publish it on "
                   "aegis/FLEET/node/ID/deploy)")


def push_statement(args, data):
    """`aegis push rm.stmt --to NODE|group:NAME --broker URL`: publish a
    signed statement on each target's deploy topic and print the answers."""
    import sys
    from node.cli.main import _tls
    from node.mqtt.push import PushError
    from node.mqtt.statement_send import send
    try:
        op, res = send(args.broker, args.fleet, data, args.to,
                       timeout_s=min(args.timeout, 60), tls=_tls(args))
    except (PushError, ValueError, ConnectionError) as e:
        die_broker(e)
    bad = 0
    for node in sorted(res):
        ok, detail = res[node]
        if ok:
            print("%s: %s applied: %s" % (node, op, detail))
        else:
            bad += 1
            print("aegis: %s refused the %s: %s" % (node, op, detail), file=sys.stderr)
    if bad:
        sys.exit(1)
