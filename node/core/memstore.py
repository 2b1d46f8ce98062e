# The store interface (store.py) in memory, for tests and simulations.
from node.core.store import StoreError


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
