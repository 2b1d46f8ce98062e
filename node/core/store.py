# The storage interface the core is handed, and an in-memory implementation.
#
# The core never opens files.  Drivers hand it an object with these methods;
# `node.store.DirStore` (gateway: atomic writes, fsync) and the board's flash
# store implement it, `MemStore` serves tests and simulations.
#
#   read(name) -> bytes | None          whole object, None when absent
#   write(name, data)                   atomic replace: old or new, never torn
#   append(name, data)                  append to a log object (created if absent)
#   read_at(name, offset, n) -> bytes   a slice of an object (b"" past its end)
#   write_at(name, offset, data)        write into a scratch object in place
#   size(name) -> int                   -1 when absent
#   rename(src, dst)                    atomic move, replacing dst
#   delete(name)                        no error when absent
#   list(prefix) -> [name]              names starting with prefix, sorted
#   sync(name)                          make earlier appends/write_at durable
#
# Names are relative paths with "/" separators made by the node itself
# (never taken verbatim from the network).


class StoreError(Exception):
    pass


class MemStore:
    def __init__(self):
        self.objs = {}

    def read(self, name):
        b = self.objs.get(name)
        return None if b is None else bytes(b)

    def write(self, name, data):
        self.objs[name] = bytearray(data)

    def append(self, name, data):
        b = self.objs.get(name)
        if b is None:
            b = self.objs[name] = bytearray()
        b.extend(data)

    def read_at(self, name, offset, n):
        b = self.objs.get(name)
        if b is None:
            raise StoreError("no such object: %s" % name)
        return bytes(b[offset:offset + n])

    def write_at(self, name, offset, data):
        b = self.objs.get(name)
        if b is None:
            b = self.objs[name] = bytearray()
        if len(b) < offset:
            b.extend(bytes(offset - len(b)))
        b[offset:offset + len(data)] = data

    def size(self, name):
        b = self.objs.get(name)
        return -1 if b is None else len(b)

    def rename(self, src, dst):
        if src not in self.objs:
            raise StoreError("no such object: %s" % src)
        self.objs[dst] = self.objs.pop(src)

    def delete(self, name):
        self.objs.pop(name, None)

    def list(self, prefix):
        return sorted(n for n in self.objs if n.startswith(prefix))

    def sync(self, name):
        pass
