# Durable per-module key/value state as an append-only log over the store.
#
# Each state_set appends one framed record; the whole map is rebuilt by
# replaying the log at load.  A torn record at the tail (crash mid-append)
# ends the replay and triggers a compaction, so it never hides later
# records.  The log is compacted (atomic rewrite) when it grows to twice
# the live data.
import binascii

_MAGIC = 0xA5
_SET = 1
_DEL = 2
_HDR = 11  # magic, op, klen, vlen(4), crc(4)
KEY_MAX = 128
VALUE_MAX = 16384


class StateError(ValueError):
    pass


def _record(op, key, val):
    body = bytes((op, len(key))) + len(val).to_bytes(4, "big")
    crc = binascii.crc32(body + key + val) & 0xFFFFFFFF
    return bytes((_MAGIC,)) + body + crc.to_bytes(4, "big") + key + val


class StateLog:
    def __init__(self, store, name, max_bytes=262144):
        self.store = store
        self.obj = "state/%s.log" % name
        self.max_bytes = max_bytes
        self.data = {}
        self.live = 0       # bytes of live keys + values
        self.log_size = 0
        self._load()

    def _load(self):
        raw = self.store.read(self.obj) or b""
        i = 0
        n = len(raw)
        torn = False
        while i < n:
            if n - i < _HDR or raw[i] != _MAGIC:
                torn = True
                break
            op = raw[i + 1]
            kl = raw[i + 2]
            vl = int.from_bytes(raw[i + 3:i + 7], "big")
            end = i + _HDR + kl + vl
            if end > n or op not in (_SET, _DEL):
                torn = True
                break
            crc = int.from_bytes(raw[i + 7:i + 11], "big")
            if binascii.crc32(raw[i + 1:i + 7] + raw[i + _HDR:end]) & 0xFFFFFFFF != crc:
                torn = True
                break
            key = bytes(raw[i + _HDR:i + _HDR + kl])
            if op == _SET:
                self._put(key, bytes(raw[i + _HDR + kl:end]))
            else:
                self._drop(key)
            i = end
        self.log_size = i
        if torn:
            self.compact()

    def _put(self, key, val):
        old = self.data.get(key)
        if old is not None:
            self.live -= len(key) + len(old)
        self.data[key] = val
        self.live += len(key) + len(val)

    def _drop(self, key):
        old = self.data.pop(key, None)
        if old is not None:
            self.live -= len(key) + len(old)

    def get(self, key):
        return self.data.get(key)

    def set(self, key, val):
        if not 1 <= len(key) <= KEY_MAX:
            raise StateError("state key must be 1..%d bytes" % KEY_MAX)
        if len(val) > VALUE_MAX:
            raise StateError("state value over %d bytes" % VALUE_MAX)
        old = self.data.get(key)
        grow = len(key) + len(val) - (0 if old is None else len(key) + len(old))
        if self.live + grow > self.max_bytes:
            raise StateError("module state over its %d byte quota" % self.max_bytes)
        if old == val:
            return
        rec = _record(_SET, key, val)
        self.store.append(self.obj, rec)
        self.log_size += len(rec)
        self._put(key, val)
        self._maybe_compact()

    def delete(self, key):
        if key not in self.data:
            return
        rec = _record(_DEL, key, b"")
        self.store.append(self.obj, rec)
        self.log_size += len(rec)
        self._drop(key)
        self._maybe_compact()

    def _maybe_compact(self):
        if self.log_size > 4096 and self.log_size > 2 * (self.live + _HDR * len(self.data)):
            self.compact()

    def restore(self, snapshot):
        """Return to a map taken earlier with dict(self.data)."""
        if snapshot == self.data:
            return
        self.data = dict(snapshot)
        self.live = 0
        for k, v in self.data.items():
            self.live += len(k) + len(v)
        self.compact()

    def compact(self):
        out = [_record(_SET, k, v) for k, v in self.data.items()]
        b = b"".join(out)
        self.store.write(self.obj, b)
        self.log_size = len(b)

    def flush(self):
        self.store.sync(self.obj)
