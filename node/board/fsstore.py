# The core's store interface (node/core/store.py) over a board's flash
# filesystem (littlefs on rp2/esp32, the host's files on the Unix port).
# Atomic replace is write-temp-then-rename: littlefs renames atomically, so
# a power cut leaves the old or the new object.  MicroPython has no fsync;
# close() commits a littlefs file, so every write closes its file.
import os

from node.core.store import StoreError

_TMP = ".tmp"


def _isdir(p):
    try:
        return os.stat(p)[0] & 0x4000 != 0
    except OSError:
        return False


class FlashStore:
    def __init__(self, root):
        self.root = root.rstrip("/") or "/"
        self._mk(self.root)
        for n in self.list(""):
            if n.endswith(_TMP):        # a write cut short by a reset
                self.delete(n)

    def _mk(self, d):
        cur = "" if not d.startswith("/") else "/"
        for part in d.strip("/").split("/"):
            cur = cur + part if cur in ("", "/") else cur + "/" + part
            if not _isdir(cur):
                try:
                    os.mkdir(cur)
                except OSError:
                    pass

    def _p(self, name):
        if not name or name[0] == "/" or ".." in name.split("/"):
            raise StoreError("bad object name: %r" % name)
        return self.root + "/" + name

    def _dir_of(self, name):
        i = name.rfind("/")
        if i > 0:
            self._mk(self.root + "/" + name[:i])

    def read(self, name):
        try:
            with open(self._p(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def write(self, name, data):
        p = self._p(name)
        self._dir_of(name)
        with open(p + _TMP, "wb") as f:
            f.write(data)
        os.rename(p + _TMP, p)

    def append(self, name, data):
        self._dir_of(name)
        with open(self._p(name), "ab") as f:
            f.write(data)

    def read_at(self, name, offset, n):
        try:
            f = open(self._p(name), "rb")
        except OSError:
            raise StoreError("no such object: %s" % name)
        with f:
            f.seek(offset)
            return f.read(n)

    def write_at(self, name, offset, data):
        p = self._p(name)
        self._dir_of(name)
        try:
            f = open(p, "r+b")
        except OSError:
            f = open(p, "wb")
        with f:
            end = f.seek(0, 2)
            if end < offset:            # chunks may arrive out of order
                z = bytes(min(512, offset - end))
                while end < offset:
                    end += f.write(z[:offset - end])
            f.seek(offset)
            f.write(data)

    def size(self, name):
        try:
            return os.stat(self._p(name))[6]
        except OSError:
            return -1

    def rename(self, src, dst):
        s, d = self._p(src), self._p(dst)
        self._dir_of(dst)
        try:
            os.stat(s)
        except OSError:
            raise StoreError("no such object: %s" % src)
        try:
            os.rename(s, d)
        except OSError:         # FAT and some ports do not replace: remove first
            os.remove(d)
            os.rename(s, d)

    def delete(self, name):
        try:
            os.remove(self._p(name))
        except OSError:
            pass

    def list(self, prefix):
        out = []  # type: list[str]
        self._walk(self.root, "", prefix, out)
        out.sort()
        return out

    def _walk(self, path, rel, prefix, out):
        try:
            if hasattr(os, "ilistdir"):
                it = list(os.ilistdir(path))
            else:               # CPython (tests of the store itself)
                it = [(n, 0x4000 if _isdir(path + "/" + n) else 0x8000, 0)
                      for n in os.listdir(path)]
        except OSError:
            return
        for e in it:
            n = e[0]
            r = rel + n
            if e[1] == 0x4000:
                if prefix.startswith(r + "/") or r.startswith(prefix) or not prefix:
                    self._walk(path + "/" + n, r + "/", prefix, out)
            elif r.startswith(prefix):
                out.append(r)

    def sync(self, name):
        pass    # every write above already closed (committed) its file

    def free(self):
        """Bytes free on the filesystem (for status), or -1."""
        try:
            s = os.statvfs(self.root)
            return s[0] * s[3]
        except (OSError, AttributeError):
            return -1
