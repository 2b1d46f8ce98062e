"""Gateway configuration (TOML).  Every key is checked with a clear error.

    node_id = "gw-1"                 # [A-Za-z0-9_.-], 1..64
    fleet = "home"
    store_dir = "/var/lib/aegis"
    control_socket = "/run/aegis/aegis.sock"
    trusted_keys = ["/etc/aegis/operator.pub"]

    [rollback]                       # optional
    max_traps = 3
    window_s = 10

    [policy]                         # optional: narrows every module
    emit = ["alarm/", "avg/"]        # emit prefixes any module may get
    ports = ["facts"]                # ports any module may get

    [limits]                         # optional: bounds for every module
    allow_unmetered = false          # refuse modules packed with --no-meter
    fuel_max = 200000000             # largest limits.fuel a manifest may ask
    memory_pages_max = 1024          # largest limits.memory_pages

    [ports.facts]                    # bind port "facts" to an adapter
    adapter = "node_facts"
    [ports.web]
    adapter = "http"
    allow = ["127.0.0.1:8080"]       # host:port the module may reach
    timeout_s = 2

    [mqtt]                           # optional: without it the node runs standalone
    url = "mqtt://broker:1883"       # or mqtts://broker:8883 with ca/cert/key
    ca = "ca.crt"                    # mqtts: CA bundle; cert/key: client cert
    cert = "gw-1"                    # or PREFIX of `aegis ca issue` (.crt/.key/.ca.crt)
    username = "gw-1"                # optional, with password (or password_file)
    groups = ["lab"]                 # deploy groups this node belongs to
    forward = ["#"]                  # event filters sent to the mesh (default all)
    accept = ["#"]                   # event filters taken from the mesh (default all)
    outbox_max = 10000               # events kept while the broker is away
    outbox_bytes = 4194304
    max_chunk = 16384                # largest push chunk this node accepts

    [quic]                           # optional: push and gateway mesh over QUIC,
    listen = "0.0.0.0:4433"          # mutual TLS (keys in node/quic/config.py,
    cert = "gw-1.crt"                # docs/QUIC.md)
    key = "gw-1.key"
    ca = "gw-1.ca.crt"
    peers = ["10.0.0.2:4433"]
"""
import os
import tomllib

from node.adapters import ADAPTERS

ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


class ConfigError(ValueError):
    pass


def _need(d, key, typ, where="config"):
    if key not in d:
        raise ConfigError("%s: missing key %r" % (where, key))
    v = d[key]
    if not isinstance(v, typ):
        raise ConfigError("%s: %r must be %s" % (where, key, typ.__name__))
    return v


def check_id(v, what):
    if not 1 <= len(v) <= 64 or not set(v) <= ID_CHARS:
        raise ConfigError("%s %r: use 1..64 of A-Z a-z 0-9 _ . -" % (what, v))


class Config:
    def __init__(self, d, path="config"):
        self.path = path
        base = os.path.dirname(os.path.abspath(path)) if path != "config" else os.getcwd()

        def rel(p):
            return p if os.path.isabs(p) else os.path.join(base, p)

        self.raw = d
        self.node_id = _need(d, "node_id", str)
        check_id(self.node_id, "node_id")
        self.fleet = _need(d, "fleet", str)
        check_id(self.fleet, "fleet")
        self.store_dir = rel(_need(d, "store_dir", str))
        self.control_socket = rel(_need(d, "control_socket", str))
        tk = _need(d, "trusted_keys", list)
        if not tk or not all(isinstance(x, str) for x in tk):
            raise ConfigError("config: trusted_keys must be a non-empty list of .pub paths")
        self.trusted_keys = [rel(x) for x in tk]
        rb = d.get("rollback", {})
        self.max_traps = int(rb.get("max_traps", 3))
        self.trap_window_ms = int(float(rb.get("window_s", 10)) * 1000)
        if self.max_traps < 1 or self.trap_window_ms < 1:
            raise ConfigError("config: [rollback] max_traps and window_s must be positive")
        pol = d.get("policy", {})
        if not isinstance(pol, dict):
            raise ConfigError("config: [policy] must be a table")
        self.policy = {}
        for k in ("emit", "ports"):
            if k in pol:
                v = pol[k]
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise ConfigError("config: policy.%s must be a list of strings" % k)
                self.policy[k] = v
        self.limits = _limits(d.get("limits", {}))
        self.ports = {}
        ports = d.get("ports", {})
        if not isinstance(ports, dict):
            raise ConfigError("config: [ports] must be a table of tables")
        for name, spec in ports.items():
            where = "config [ports.%s]" % name
            if not isinstance(spec, dict):
                raise ConfigError("%s must be a table" % where)
            kind = _need(spec, "adapter", str, where)
            if kind not in ADAPTERS:
                raise ConfigError("%s: unknown adapter %r (known: %s)"
                                  % (where, kind, ", ".join(sorted(ADAPTERS))))
            try:
                ADAPTERS[kind].check(spec)
            except ValueError as e:
                raise ConfigError("%s: %s" % (where, e))
            self.ports[name] = spec
        self.mqtt = MqttConfig(d["mqtt"], rel) if "mqtt" in d else None
        self.quic = None                # [quic]: node/quic/config.py documents it
        if "quic" in d:
            from node.quic.config import QuicConfig
            self.quic = QuicConfig(d["quic"], rel, self.node_id)


# Checks shared by the config sections ([limits], [mqtt], node/quic/config.py).
def check_table(d, section, known):
    """d must be a table with only `known` keys."""
    if not isinstance(d, dict):
        raise ConfigError("config: [%s] must be a table" % section)
    extra = sorted(set(d) - set(known))
    if extra:
        raise ConfigError("config [%s]: unknown key(s) %s (known: %s)"
                          % (section, ", ".join(extra), ", ".join(sorted(known))))


def int_in(d, section, k, dflt, lo, hi):
    """d[k] (default dflt): an integer in lo..hi, not a bool."""
    v = d.get(k, dflt)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError("config [%s]: %s must be an integer in %d..%d" % (section, k, lo, hi))
    return v


def topic_filters(d, section, key):
    """d[key]: a list of valid topic filters, or None when absent."""
    from node.core.bus import check_filter, TopicError
    if key not in d:
        return None
    v = d[key]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError("config [%s]: %s must be a list of topic filters" % (section, key))
    for f in v:
        try:
            check_filter(f)
        except TopicError as e:
            raise ConfigError("config [%s]: %s: %s" % (section, key, e))
    return v


def _limits(lim):
    """[limits]: what this node lets any module have (docs/METERING.md)."""
    from node.admission import Limits
    check_table(lim, "limits", ("allow_unmetered", "fuel_max", "memory_pages_max"))
    allow = lim.get("allow_unmetered", False)
    if not isinstance(allow, bool):
        raise ConfigError("config [limits]: allow_unmetered must be true or false")
    return Limits(allow, int_in(lim, "limits", "fuel_max", 200000000, 1, 1 << 40),
                  int_in(lim, "limits", "memory_pages_max", 1024, 1, 65536))


class MqttConfig:
    def __init__(self, m, rel):
        from node.mqtt.link import UrlError, parse_url
        check_table(m, "mqtt", ("url", "ca", "cert", "key", "username", "password",
                                "password_file", "groups", "forward", "accept", "outbox_max",
                                "outbox_bytes", "max_chunk", "max_package", "keepalive",
                                "inflight"))
        self.url = _need(m, "url", str, "config [mqtt]")
        try:
            tls = parse_url(self.url)[0]
        except UrlError as e:
            raise ConfigError("config [mqtt]: %s" % e)
        for k in ("ca", "cert", "key"):
            v = m.get(k)
            if v is not None and not isinstance(v, str):
                raise ConfigError("config [mqtt]: %s must be a file path" % k)
            setattr(self, k, rel(v) if v else None)
        if not tls and (self.ca or self.cert or self.key):
            raise ConfigError("config [mqtt]: ca/cert/key need an mqtts:// url")
        if tls:
            # Check the files now (cert = PREFIX of `aegis ca issue` allowed):
            # a typo is a clear start-up error, not a link that never comes up.
            from node.mqtt import tls as T
            try:
                self.ca, self.cert, self.key = T.resolve(self.ca, self.cert, self.key)
                T.context(self.ca, self.cert, self.key)
            except T.TlsFileError as e:
                raise ConfigError("config [mqtt]: %s" % e)
        self.username, self.password = m.get("username"), m.get("password")
        for k in ("username", "password"):
            if getattr(self, k) is not None and not isinstance(getattr(self, k), str):
                raise ConfigError("config [mqtt]: %s must be a string" % k)
        pf = m.get("password_file")
        if pf is not None:
            # Keeps the secret out of a config file that many may read.
            if not isinstance(pf, str) or self.password is not None:
                raise ConfigError("config [mqtt]: password_file is a path, instead of password")
            try:
                with open(rel(pf)) as f:
                    self.password = f.readline().rstrip("\r\n")
            except OSError as e:
                raise ConfigError("config [mqtt]: password_file: %s" % e)
        if self.password is not None and self.username is None:
            raise ConfigError("config [mqtt]: a password needs a username")
        self.groups = m.get("groups", [])
        if not isinstance(self.groups, list) or not all(isinstance(g, str) for g in self.groups):
            raise ConfigError("config [mqtt]: groups must be a list of names")
        for g in self.groups:
            check_id(g, "group")
        self.forward = topic_filters(m, "mqtt", "forward")
        self.accept = topic_filters(m, "mqtt", "accept")

        def num(k, dflt, lo, hi):
            return int_in(m, "mqtt", k, dflt, lo, hi)
        self.outbox_max = num("outbox_max", 10000, 1, 10 ** 7)
        self.outbox_bytes = num("outbox_bytes", 4 << 20, 1024, 1 << 30)
        self.max_chunk = num("max_chunk", 16384, 256, 65536)
        self.max_package = num("max_package", 16 << 20, 1024, 1 << 30)
        self.keepalive = num("keepalive", 15, 5, 3600)
        self.inflight = num("inflight", 100, 1, 1000)


def load(path):
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("config file not found: %s" % path)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("%s: invalid TOML: %s" % (path, e))
    return Config(d, path)
