"""`aegis`: operator and node command line.

Client commands talk to a gateway over its control socket (--socket, or
$AEGIS_SOCKET, default /run/aegis/aegis.sock).  Exit codes: 0 success,
1 refused / failed, 2 usage or local error (bad file, no gateway).
"""
import argparse
import json
import os
import sys
import time

from node.cli.common import DEFAULT_SOCKET, client, die, die_broker, jsonable, read_or_die, request
from node.cli.packing import cmd_pack
from node.control import ControlError

# ---- commands ---------------------------------------------------------------
def cmd_keygen(args):
    from node import keys
    if os.path.exists(args.out + ".key") and not args.force:
        die("%s.key exists; pass --force to overwrite" % args.out, 2)
    k, p = keys.keygen(args.out)
    print("wrote %s (keep it secret) and %s (give it to nodes as a trusted key)" % (k, p))


def cmd_gateway(args):
    from node.gateway.daemon import main
    sys.exit(main(args.config))


def cmd_install(args):
    data = read_or_die(args.file)
    print("installing %s (%d bytes)..." % (args.file, len(data)), file=sys.stderr)
    r = request(args, "install", package=data, rollback=args.rollback)
    if not r.get("changed"):
        print("%s@%s is already active" % (r["name"], r["version"]))
    else:
        extra = " (replaced %s)" % r["replaced"] if r.get("replaced") else ""
        print("%s@%s is %s%s, switched in %.1f ms"
              % (r["name"], r["version"], r["state"], extra, r.get("swap_ms", 0)))


def cmd_emit(args):
    from node.core import cbor
    if args.json is not None:
        try:
            value = json.loads(args.json)
        except ValueError as e:
            die("--json is not valid JSON: %s" % e, 2)
        data = cbor.dumps(value)
    elif args.hex is not None:
        try:
            data = bytes.fromhex(args.hex)
        except ValueError:
            die("--hex is not hexadecimal", 2)
    else:
        data = b""
    request(args, "emit", topic=args.topic, data=data)


def _print_event(ev, as_json):
    if as_json:
        print(json.dumps(jsonable(ev)), flush=True)
    else:
        t = time.strftime("%H:%M:%S", time.localtime(ev["ts"] / 1000))
        mod = " [%s]" % ev["mod"] if ev.get("mod") else ""
        print("%s %-28s %s%s %s" % (t, ev["topic"], ev["src"], mod,
                                   json.dumps(jsonable(ev["data"]))), flush=True)


def cmd_events(args):
    if not args.follow:
        r = request(args, "events", topic=args.topic, last=args.last)
        for ev in r["events"]:
            _print_event(ev, args.json)
        return
    c = client(args)
    c.sock.settimeout(None)
    try:
        c.send({"op": "events", "follow": True, "topic": args.topic,
                "last": args.last if args.last_given else 0})
        first = c.recv()
        if not first.get("ok"):
            die(first.get("error", "refused"), 1)
        while True:
            m = c.recv()
            if m.get("missed"):
                print("aegis: %d events skipped (reader too slow)" % m["missed"], file=sys.stderr)
            _print_event(m["event"], args.json)
    except KeyboardInterrupt:
        pass
    except ControlError as e:
        die(str(e), 1)
    finally:
        c.close()


def _module_rows(mods):
    rows = [("NAME", "VERSION", "STATE", "EVENTS", "TRAPS", "NOTE")]
    for m in mods:
        note = m.get("reason") or m.get("last_error") or ""
        if m.get("metered") is False:   # allowed by the node's config only
            note = ("unmetered; " + note) if note else "unmetered"
        rows.append((m["name"], m["version"], m["state"], str(m["events"]),
                     str(m["traps"]), note))
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(r[i].ljust(w[i]) for i in range(5)) + "  " + r[5] for r in rows]


def _tls(args):
    d = {k: getattr(args, k) for k in ("ca", "cert", "key", "username", "password")
         if getattr(args, k, None) is not None}
    # A password on the command line shows in `ps`; the environment does not.
    if "username" in d and "password" not in d and os.environ.get("AEGIS_MQTT_PASSWORD"):
        d["password"] = os.environ["AEGIS_MQTT_PASSWORD"]
    return d


def cmd_push(args):
    if args.quic:
        from node.quic.cli import push as quic_push
        return quic_push(args)
    if not args.to or not args.broker:
        die("push needs --to and --broker (MQTT), or --quic HOST:PORT --cert PREFIX", 2)
    from node.mqtt.push import PushError, push
    data = read_or_die(args.file)
    if data[:8] == b"AEGISRB1":     # a signed rollback/removal statement
        from node.cli.remove_cmd import push_statement
        return push_statement(args, data)
    try:
        hdr, res = push(args.broker, args.fleet, data, args.to, chunk=args.chunk or 4096,
                        window=args.window or 16, timeout_s=args.timeout, tls=_tls(args))
    except (PushError, ValueError, ConnectionError) as e:
        die_broker(e)
    bad = 0
    for node in sorted(res):
        ok, detail, sent, n = res[node]
        if ok:
            print("%s: %s@%s %s (sent %d chunk messages for %d chunks)"
                  % (node, hdr.name, hdr.version, detail, sent, n))
        else:
            bad += 1
            print("aegis: %s refused %s@%s: %s" % (node, hdr.name, hdr.version, detail),
                  file=sys.stderr)
    if bad:
        sys.exit(1)


def _runtime_cell(rt):
    """A board's runtime (version, slot, a failed update); "-" elsewhere."""
    if not isinstance(rt, dict):
        return "-"
    f = rt.get("failed")
    return "%s (slot %s%s)" % (rt.get("v", "?"), rt.get("slot", "?"),
                               "; %s failed" % f.get("v") if isinstance(f, dict) else "")


def cmd_fleet_status(args):
    from node.mqtt.operator import fleet_status
    try:
        nodes, bad = fleet_status(args.broker, args.fleet, **_tls(args))
    except (ValueError, ConnectionError) as e:
        die_broker(e)
    if args.json:
        print(json.dumps(jsonable({"fleet": args.fleet, "nodes": [nodes[n] for n in sorted(nodes)],
                                   "unreadable": bad})))
        return
    rows = [("NODE", "ONLINE", "GROUPS", "MODULES", "OUTBOX", "DROPPED", "RUNTIME")]
    for n in sorted(nodes):
        st = nodes[n]
        c = st["counts"]
        rows.append((n, "yes" if st["online"] else "no", ",".join(st["groups"]) or "-",
                     " ".join("%s@%s" % (m["name"], m["version"]) for m in st["modules"]) or "-",
                     str(c.get("outbox_len", "-")), str(c.get("outbox_dropped", "-")),
                     _runtime_cell(st.get("runtime"))))
    w = [max(len(r[i]) for r in rows) for i in range(7)]
    print("fleet %s: %d node(s)" % (args.fleet, len(nodes)))
    for r in rows:
        print("  ".join(r[i].ljust(w[i]) for i in range(7)).rstrip())
    for b in bad:
        print("aegis: unreadable status %s" % b, file=sys.stderr)


def cmd_status(args):
    if args.broker:
        return cmd_fleet_status(args)
    r = request(args, "status")
    r.pop("ok", None)
    if args.json:
        print(json.dumps(jsonable(r)))
        return
    print("node %s  fleet %s  up %ss  events %d  rollbacks %d"
          % (r["node_id"], r["fleet"], r["uptime_s"], r["counts"]["events"],
             r["counts"]["rollbacks"]))
    print("ports: %s" % (", ".join(r["ports"]) or "none bound"))
    m = r.get("mqtt")
    if m:
        print("mqtt: %s %s" % (m["url"], "connected" if m.get("connected") else
                               "NOT connected: %s" % (m.get("last_error") or "connecting")))
    for line in _module_rows(r["modules"]):
        print(line)
    if r.get("quic"):
        from node.quic.cli import status_lines
        for line in status_lines(r["quic"]):
            print(line)


def cmd_modules(args):
    r = request(args, "modules")
    if args.json:
        print(json.dumps(jsonable(r["modules"])))
        return
    for line in _module_rows(r["modules"]):
        print(line)


def cmd_reload(args):
    r = request(args, "reload")
    print("config reloaded; ports bound: %s" % (", ".join(r["ports"]) or "none"))


def cmd_ca_init(args):
    from node import ca
    try:
        crt, key = ca.init(args.out, args.fleet, args.force)
    except ca.CAError as e:
        die(str(e), 2)
    print("fleet CA for %r: %s and %s (keep the key offline)" % (args.fleet, crt, key))


def cmd_ca_issue(args):
    from node import ca
    try:
        crt, key, cacrt = ca.issue(args.name, args.ca, args.out, args.dns or (), args.ip or ())
    except ca.CAError as e:
        die(str(e), 2)
    print("issued %s: %s, %s, %s" % (args.name, crt, key, cacrt))


def cmd_proxy(args):
    from node.proxy.host import main as proxy_main
    sys.exit(proxy_main(args.config))


def cmd_broker_config(args):
    from node.mqtt import brokerconf as bc
    try:
        paths = bc.write(args.out, args.fleet, args.operator, bc.parse_groups(args.group),
                         args.etc, args.cert_port, args.password_port, args.bind,
                         args.plain_port, bc.parse_proxies(args.proxy))
    except (bc.BrokerConfError, OSError) as e:
        die(str(e), 2)
    print("wrote %s" % ", ".join(paths))
    print(bc.NEXT_STEPS.format(etc=args.etc.rstrip("/"), out=args.out), file=sys.stderr)


def cmd_flash(args):
    from node import flash
    try:
        flash.flash(args.board, args.port, args.config, start=not args.no_start,
                    log=lambda m: print(m, file=sys.stderr, flush=True))
    except flash.FlashError as e:
        die(str(e), 1)


def parser():
    p = argparse.ArgumentParser(prog="aegis", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def cmd(name, fn, help, sock=False):
        s = sub.add_parser(name, help=help, description=help)
        s.set_defaults(fn=fn)
        if sock:
            s.add_argument("--socket", default=os.environ.get("AEGIS_SOCKET", DEFAULT_SOCKET),
                           help="gateway control socket (default $AEGIS_SOCKET or %s)"
                           % DEFAULT_SOCKET)
        return s

    s = cmd("keygen", cmd_keygen, "make an Ed25519 signing key pair")
    s.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.key and PREFIX.pub")
    s.add_argument("--force", action="store_true", help="overwrite an existing key")

    s = cmd("pack", cmd_pack, "build a signed module package from a .wasm file or module.toml")
    s.add_argument("wasm", metavar="FILE.wasm|module.toml")
    s.add_argument("--name", help="module name (required unless module.toml has it)")
    s.add_argument("--version", help="semver, e.g. 1.2.0 (required unless module.toml has it)")
    s.add_argument("--subscribe", nargs="+", metavar="FILTER", help="topic filters to receive")
    s.add_argument("--emit", nargs="+", metavar="PREFIX", help="topic prefixes it may emit")
    s.add_argument("--port", nargs="+", metavar="NAME", help="ports it may call")
    s.add_argument("--memory-pages", type=int, help="max wasm memory in 64 KiB pages (default 16)")
    s.add_argument("--fuel", type=int, help="fuel per aegis_start/aegis_event call "
                   "(default 20000000, ~50 ms of a tight loop; docs/METERING.md)")
    s.add_argument("--no-meter", action="store_true", help="do not meter the module "
                   "(nodes refuse it unless their config has allow_unmetered = true)")
    s.add_argument("--key", required=True, metavar="PREFIX.key")
    s.add_argument("--out", required=True, metavar="FILE")

    s = cmd("gateway", cmd_gateway, "run the gateway daemon")
    s.add_argument("--config", required=True, metavar="FILE.toml")

    s = cmd("install", cmd_install, "install a package; exits 0 once it is active", sock=True)
    s.add_argument("file")
    s.add_argument("--rollback", action="store_true",
                   help="local override (root on this node): allow an older or rolled-back "
                   "version; remote downgrades need `aegis rollback`")

    from node.cli.rollback_cmd import add_parser as _rollback_parser, cmd_rollback
    _rollback_parser(cmd, cmd_rollback)

    from node.cli.remove_cmd import add_parser as _remove_parser
    _remove_parser(cmd)

    s = cmd("emit", cmd_emit, "publish an event on the node's bus", sock=True)
    s.add_argument("topic")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", metavar="VALUE", help="JSON value, sent as CBOR data")
    g.add_argument("--hex", metavar="BYTES", help="raw data bytes in hex")

    s = cmd("events", cmd_events, "show recent events (and follow new ones)", sock=True)
    s.add_argument("--topic", metavar="FILTER", help="only events matching this filter")
    s.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument("--last", type=int, default=1000, help="how many recent events (default 1000)")

    def broker_args(s, required):
        s.add_argument("--broker", required=required, metavar="URL",
                       help="MQTT broker, mqtt://host:port or mqtts://host:port")
        s.add_argument("--fleet", default=os.environ.get("AEGIS_FLEET", "default"),
                       help="fleet name (default $AEGIS_FLEET or 'default')")
        s.add_argument("--ca", metavar="FILE", help="mqtts: CA that signed the broker's "
                       "certificate (the fleet CA; default: the system's)")
        s.add_argument("--cert", metavar="FILE|PREFIX", help="mqtts client certificate, or "
                       "PREFIX of `aegis ca issue` (PREFIX.crt, .key, .ca.crt)")
        s.add_argument("--key", metavar="FILE", help="mqtts client key (with --cert FILE)")
        s.add_argument("--username", help="broker login (the operator's)")
        s.add_argument("--password", help="broker password (or $AEGIS_MQTT_PASSWORD)")

    s = cmd("status", cmd_status, "node status and its modules (or the fleet's, with --broker)",
            sock=True)
    s.add_argument("--json", action="store_true")
    broker_args(s, False)

    s = cmd("push", cmd_push, "push a package to nodes over MQTT (or to one gateway over "
            "QUIC); exits 0 once every target runs it")
    s.add_argument("file")
    s.add_argument("--to", metavar="NODE_ID|group:NAME", help="MQTT: target node or group")
    broker_args(s, False)
    s.add_argument("--quic", metavar="HOST:PORT",
                   help="push straight to this gateway over QUIC (mutual TLS: --cert PREFIX "
                   "names PREFIX.crt, PREFIX.key and the fleet CA PREFIX.ca.crt)")
    s.add_argument("--chunk", type=int, default=None,
                   help="chunk bytes (default 4096 over MQTT, where a node's advertised max "
                   "wins if smaller; 65536 over QUIC)")
    s.add_argument("--window", type=int, default=None,
                   help="chunks in flight per node (default 16)")
    s.add_argument("--timeout", type=float, default=300.0, help="give up after SECONDS")

    from node.cli.runtime_cmd import add_parser as _runtime_parser
    _runtime_parser(cmd, broker_args)

    s = cmd("modules", cmd_modules, "list modules", sock=True)
    s.add_argument("--json", action="store_true")

    cmd("reload", cmd_reload, "re-read the gateway config (ports, policy, keys)", sock=True)

    s = cmd("ca", None, "the fleet certificate authority (mutual TLS)")
    casub = s.add_subparsers(dest="ca_cmd", required=True, metavar="ca COMMAND")
    c = casub.add_parser("init", help="create the fleet CA: DIR/ca.crt, DIR/ca.key")
    c.set_defaults(fn=cmd_ca_init)
    c.add_argument("--out", required=True, metavar="DIR")
    c.add_argument("--fleet", default="aegis", help="fleet name written into the CA")
    c.add_argument("--force", action="store_true", help="replace an existing CA")
    c = casub.add_parser("issue", help="issue PREFIX.crt/.key/.ca.crt for a node or operator")
    c.set_defaults(fn=cmd_ca_issue)
    c.add_argument("name", help="node id or operator name (the certificate's CN)")
    c.add_argument("--ca", required=True, metavar="DIR")
    c.add_argument("--out", required=True, metavar="PREFIX")
    c.add_argument("--dns", nargs="+", metavar="NAME", help="extra DNS names for a server")
    c.add_argument("--ip", nargs="+", metavar="ADDR", help="IP addresses for a server")

    s = cmd("proxy", cmd_proxy, "run MicroPython boards' modules here (proxy mode)")
    s.add_argument("--config", required=True, help="gateway config with [mqtt] and [proxy]")

    s = cmd("broker-config", cmd_broker_config, "write a Mosquitto config and ACL for a "
            "fleet: TLS, client certificates or passwords, each node its own topics")
    s.add_argument("--fleet", required=True)
    s.add_argument("--out", required=True, metavar="DIR", help="writes aegis.conf, aegis.acl")
    s.add_argument("--operator", nargs="+", default=["operator"], metavar="NAME",
                   help="users that may push and read the fleet (default: operator)")
    s.add_argument("--group", nargs="+", metavar="GROUP=NODE,...",
                   help="deploy group members (the ACL lets each read its group topic)")
    s.add_argument("--proxy", nargs="+", metavar="HOST=BOARD,...",
                   help="proxy hosts (`aegis proxy` user names) and the boards each serves: "
                   "the ACL gives each host those boards' proxy topics")
    s.add_argument("--etc", default="/etc/mosquitto/aegis", metavar="DIR",
                   help="where the broker keeps ca.crt, broker.crt/.key, aegis.acl, passwd")
    s.add_argument("--cert-port", type=int, default=8883, help="client-certificate "
                   "listener (0: none)")
    s.add_argument("--password-port", type=int, default=8884, help="password listener "
                   "(0: none)")
    s.add_argument("--plain-port", type=int, default=0, help="password listener WITHOUT "
                   "TLS, for boards on a trusted network (default 0: none)")
    s.add_argument("--bind", metavar="ADDR", help="listen only on this address")

    s = cmd("flash", cmd_flash, "put the node runtime on a MicroPython board")
    s.add_argument("--board", required=True, help="pico_w, esp32, esp32c3 or unix")
    s.add_argument("--port", required=True, metavar="DEVICE", help="serial device or pty")
    s.add_argument("--config", required=True, metavar="node.toml")
    s.add_argument("--no-start", action="store_true", help="copy only; do not reset/start")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    args.last_given = "--last" in argv
    try:
        args.fn(args)
    except BrokenPipeError:
        pass
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
