"""What every `aegis` subcommand shares: exiting with a message and code,
reading files named on the command line, talking to the control socket."""
import sys

from node.control import Client, ControlError

DEFAULT_SOCKET = "/run/aegis/aegis.sock"


def die(msg, code=1):
    print("aegis: %s" % msg, file=sys.stderr)
    sys.exit(code)


def die_broker(e):
    """Exit for an operator command's broker error: 1 when something said
    no (a node's refusal, or the broker refusing TLS, login or ACL), 2 for
    bad input or no broker to talk to."""
    from node.mqtt.link import LinkError
    from node.mqtt.push import PushError
    die(str(e), 1 if isinstance(e, (PushError, LinkError)) else 2)


def jsonable(v):
    if isinstance(v, (bytes, bytearray)):
        return {"hex": bytes(v).hex()}
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    return v


def client(args):
    try:
        return Client(args.socket)
    except ControlError as e:
        die(str(e), 2)


def request(args, op, **kw):
    c = client(args)
    try:
        return c.request(op, **kw)
    except ControlError as e:
        die(str(e), 1)
    except OSError as e:
        die("talking to the gateway: %s" % e, 2)
    finally:
        c.close()


def read_or_die(path):
    """The file's bytes; an unreadable file is a usage error (exit 2)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        die("cannot read %s: %s" % (path, e), 2)
