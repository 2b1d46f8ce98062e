# Board ports: what a module's `call(port, input)` reaches on a board.  The
# board's board.toml [ports] table (copied into aegis.json by `aegis flash`)
# names them; nothing else is callable (deny by default).  Hardware drivers
# are imported lazily, so the Unix port never touches `machine`.
#
# Input and output are CBOR (node.core.cbor); errors are the ABI codes.
#   facts        in: ignored        out: {node_id, board, platform, uptime_ms, mem_free, modules}
#   gpio_out     in: bool/int/empty out: the pin's value (empty input only reads)
#   adc          in: ignored        out: raw reading 0..65535
#   adc_temp     in: ignored        out: RP2040 die temperature, deg C (float)
#   sim_out      like gpio_out, in RAM (Unix board); last writes kept for tests
#   sim_sensor   like adc_temp, a slowly varying simulated reading
import gc
import sys
from micropython import const

from node.core import cbor

# ABI error codes (docs/ABI.md); private const(): no names in the heap.
_ENOENT = const(-1)
_EINVAL = const(-3)
_EIO = const(-5)


def _value(data):
    if not data:
        return None
    v = cbor.loads(bytes(data))
    if v is True or v is False:
        return 1 if v else 0
    if type(v) is not int or v not in (0, 1):
        raise ValueError("a pin value is 0/1 or a bool")
    return v


class Ports:
    def __init__(self, spec, board):
        self.spec = spec or {}
        self.board = board
        self._hw = {}           # port -> driver object, made on first call
        self.sim = {}           # sim_out port -> [values written], last 16
        self.calls = 0
        self.errors = 0

    def names(self):
        return sorted(self.spec)

    def call(self, port, data):
        """Output bytes, or a negative ABI error code.  Never raises."""
        s = self.spec.get(port)
        if s is None:
            return _ENOENT
        self.calls += 1
        try:
            return cbor.dumps(getattr(self, "_" + s.get("kind", "?"))(port, s, data))
        except AttributeError:
            self.errors += 1
            return _ENOENT       # a kind this firmware does not know
        except ValueError:
            self.errors += 1
            return _EINVAL
        except Exception as e:  # a driver error must not reach the module
            self.errors += 1
            print("port %s failed: %r" % (port, e))
            return _EIO

    def _pin(self, port, s, mode):
        p = self._hw.get(port)
        if p is None:
            import machine
            p = self._hw[port] = machine.Pin(s["pin"], mode)
        return p

    def _facts(self, port, s, data):
        b = self.board
        return {"node_id": b.id, "board": b.cfg.get("board", "?"),
                "platform": sys.platform, "uptime_ms": b.now(),
                "mem_free": gc.mem_free() if hasattr(gc, "mem_free") else -1,
                "modules": len(b.mods)}

    def _gpio_out(self, port, s, data):
        import machine
        p = self._pin(port, s, machine.Pin.OUT)
        v = _value(data)
        if v is not None:
            p.value(v)
        return p.value()

    def _adc(self, port, s, data):
        a = self._hw.get(port)
        if a is None:
            import machine
            a = self._hw[port] = machine.ADC(s["pin"])
        return a.read_u16()

    def _adc_temp(self, port, s, data):
        a = self._hw.get(port)
        if a is None:
            import machine
            a = self._hw[port] = machine.ADC(4)
        # RP2040 datasheet 4.9.5: 27 C at 0.706 V, -1.721 mV per degree.
        return 27 - (a.read_u16() * 3.3 / 65535 - 0.706) / 0.001721

    def _sim_out(self, port, s, data):
        w = self.sim.setdefault(port, [0])
        v = _value(data)
        if v is not None:
            w.append(v)
            del w[:-16]
        return w[-1]

    def _sim_sensor(self, port, s, data):
        t = self.board.now() // 1000    # ms since the runtime started
        return 20.0 + (t % 100) / 10
