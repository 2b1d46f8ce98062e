"""The `aegis` command's QUIC parts: `push --quic` and the QUIC lines of
`aegis status` (kept here so node/cli/main.py only dispatches)."""
import sys
import time

from node.cli.common import die, read_or_die


def push(args):
    from node.quic.push import DEFAULT_CHUNK, DEFAULT_WINDOW, PushError, UsageError
    from node.quic.push import push as qpush
    if not args.cert:
        die("--quic needs --cert PREFIX (PREFIX.crt, PREFIX.key, PREFIX.ca.crt from "
            "`aegis ca issue`)", 2)
    data = read_or_die(args.file)
    try:
        p, (ok, detail) = qpush(args.quic, args.cert, data, chunk=args.chunk or DEFAULT_CHUNK,
                                window=args.window or DEFAULT_WINDOW, timeout_s=args.timeout)
    except UsageError as e:
        die(str(e), 2)
    except PushError as e:
        die(str(e), 1)
    except ConnectionError as e:
        die(str(e), 2)
    except ValueError as e:
        die(str(e), 2)
    label = "%s@%s" % (p.hdr.name, p.hdr.version)
    if not ok:
        die("%s refused %s: %s" % (p.node or args.quic, label, detail), 1)
    print("%s: %s %s (sent %d chunk messages for %d chunks; %d connection(s), %d resumed)"
          % (p.node, label, detail, p.sender.chunks_sent, p.sender.n, p.connects, p.resumed))


def status_lines(q):
    """Human lines for the status's "quic" map."""
    where = "listening on %s" % q["listen"] if q.get("listen") else "not listening (dials only)"
    out = ["quic: %s, %d connection(s), %d client(s) refused"
           % (where, q.get("connections", 0), q.get("refused", 0))]
    rows = [("PEER", "NODE", "DIR", "STATE", "FOR", "OUTBOX", "INFLIGHT", "NOTE")]
    now = time.time()
    for p in q.get("peers", []):
        rows.append((p["addr"] or p["peer"], p["node"] or "?", p["dir"], p["state"],
                     "%ds" % max(0, now - p["since"]), str(p["outbox"]), str(p["inflight"]),
                     (p["last_error"] or "")[:60] if p["state"] != "up" else ""))
    if len(rows) > 1:
        w = [max(len(r[i]) for r in rows) for i in range(7)]
        out += ["  ".join(r[i].ljust(w[i]) for i in range(7)) + "  " + r[7] for r in rows]
    out.append("quic events: received %d, relayed %d, forwarded %d, dups %d, bad %d"
               % (q.get("received", 0), q.get("relayed", 0), q.get("forwarded", 0),
                  q.get("dups", 0), q.get("bad_envelopes", 0)))
    return [x.rstrip() for x in out]


if __name__ == "__main__":
    sys.exit("use `aegis push --quic` or `aegis status`")
