"""Port adapters on a gateway.  A port is a name a module calls; the node's
config binds it to one of these.  An adapter takes the call's input bytes
and returns output bytes or a negative ABI error code.
"""
import http.client
import os
import platform
import time

from node.core import abi as A, cbor

_BOOT = time.monotonic()


class NodeFacts:
    """Input ignored; output a CBOR map of facts about this node."""

    @staticmethod
    def check(spec):
        pass

    def __init__(self, spec):
        pass

    def __call__(self, host, data):
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = -1.0
        return cbor.dumps({
            "node_id": host.node_id,
            "platform": platform.machine(),
            "system": platform.system(),
            "uptime_ms": int((time.monotonic() - _BOOT) * 1000),
            "time_ms": host.clock(),
            "modules": len(host.modules),
            "load1": round(load, 2),
        })


class Http:
    """HTTP GET to hosts the config allows.

    Input: CBOR map {"url": "http://host:port/path"} or the URL as text.
    Output: CBOR map {"status": int, "body": bytes} (body cut at max_body).
    Errors: EPERM for a host not in `allow`, EINVAL for a bad URL, EIO for
    network failures.  The call blocks the node for at most `timeout_s`.
    """

    @staticmethod
    def check(spec):
        allow = spec.get("allow")
        if not isinstance(allow, list) or not allow or \
                not all(isinstance(h, str) and ":" in h for h in allow):
            raise ValueError("http adapter needs allow = [\"host:port\", ...]")
        t = spec.get("timeout_s", 2)
        if not isinstance(t, (int, float)) or not 0 < t <= 30:
            raise ValueError("timeout_s must be in (0, 30]")

    def __init__(self, spec):
        self.allow = set(spec["allow"])
        self.timeout = float(spec.get("timeout_s", 2))
        self.max_body = int(spec.get("max_body", 65536))

    def __call__(self, host, data):
        try:
            req = cbor.loads(data) if data[:1] != b"h" else data.decode()
        except (ValueError, UnicodeError):
            return A.EINVAL
        url = req.get("url") if isinstance(req, dict) else req
        if not isinstance(url, str) or not url.startswith("http://"):
            return A.EINVAL
        rest = url[len("http://"):]
        hostport, _, path = rest.partition("/")
        if ":" not in hostport:
            hostport += ":80"
        if hostport not in self.allow:
            return A.EPERM
        h, _, p = hostport.rpartition(":")
        try:
            conn = http.client.HTTPConnection(h, int(p), timeout=self.timeout)
            conn.request("GET", "/" + path)
            resp = conn.getresponse()
            body = resp.read(self.max_body)
            conn.close()
        except (OSError, ValueError, http.client.HTTPException):
            return A.EIO
        return cbor.dumps({"status": resp.status, "body": body})


ADAPTERS = {"node_facts": NodeFacts, "http": Http}


def bind(spec_by_port):
    """{port: adapter} from the config's [ports] tables."""
    return {name: ADAPTERS[spec["adapter"]](spec) for name, spec in spec_by_port.items()}
