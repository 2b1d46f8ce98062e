"""`aegis rollback`: sign a rollback statement and send it to a node (or
write it to a file, to publish on the node's MQTT deploy topic)."""
import os
import sys
import time

from node.cli.common import die, read_or_die, request


def cmd_rollback(args):
    from node import keys
    from node.core import rollback as rb
    frm = args.from_version
    if frm is None:
        if args.out:
            die("--out needs --from VERSION (the version active on the node now)", 2)
        mods = request(args, "modules")["modules"]
        act = [m for m in mods if m["name"] == args.name and m["state"] == "running"]
        if not act:
            die("no running module named %r on that node" % args.name, 1)
        frm = act[0]["version"]
    pkg = read_or_die(args.package) if args.package else None
    try:
        sign, raw = keys.signer(keys.load_private(args.key))
        st = rb.make(args.name, frm, args.version, sign, raw, os.urandom(16),
                     time.time_ns() // 1000000, node=args.node)
    except (ValueError, OSError, keys.KeyError_) as e:
        die("cannot sign the rollback: %s" % e, 2)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "wb") as f:
            f.write(st)
        os.replace(tmp, args.out)
        print("signed rollback %s %s -> %s for node %s -> %s (valid %d h)"
              % (args.name, frm, args.version, args.node, args.out, rb.MAX_AGE_MS // 3600000))
        return
    print("rolling back %s %s -> %s..." % (args.name, frm, args.version), file=sys.stderr)
    r = request(args, "rollback", statement=st, package=pkg)
    print("%s@%s is %s (rolled back from %s; %s is now refused on this node)"
          % (r["name"], r["version"], r["state"], frm, frm))


def add_parser(cmd, fn):
    s = cmd("rollback", fn, "switch a module back to an older version with a signed "
            "rollback statement", sock=True)
    s.add_argument("name")
    s.add_argument("version", help="the older version to go back to")
    s.add_argument("--key", required=True, metavar="PREFIX.key",
                   help="a key the node trusts")
    s.add_argument("--from", dest="from_version", metavar="VERSION",
                   help="the version active now (default: asked from the node)")
    s.add_argument("--package", metavar="FILE",
                   help="the older version's package, if the node does not keep it")
    s.add_argument("--node", default="*", help="node id the statement is for (default any)")
    s.add_argument("--out", metavar="FILE", help="write the statement instead of sending it")
