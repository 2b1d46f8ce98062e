# The core's store interface (node/core/store.py) over a board's flash
# filesystem (littlefs on rp2/esp32, the host's files on the Unix port),
# for MicroPython only (os.ilistdir).  Atomic replace is
# write-temp-then-rename: littlefs renames atomically, so a power cut
# leaves the old or the new object.  MicroPython has no fsync; close()
# commits a littlefs file, so every write closes its file.  Few helpers on
# purpose: each function is an object in the board's heap (docs/BOARDS.md
# "Heap budget").
import os
from micropython import const

from node.core.store import StoreError

_TMP = ".tmp"
_DIR = const(0x4000)


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
            try:
                os.mkdir(cur)
            except OSError:     # there already (or made by the next try)
                pass

    def _p(self, name, mk=False):
        """The path of object `name`; mk: make its directory first."""
        if not name or name[0] == "/" or ".." in name.split("/"):
            raise StoreError("bad object name: %r" % name)
        i = name.rfind("/")
        if mk and i > 0:
            self._mk(self.root + "/" + name[:i])
        return self.root + "/" + name

    def read(self, name):
        try:
            with open(self._p(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def write(self, name, data):
        p = self._p(name, True)
        with open(p + _TMP, "wb") as f:
            f.write(data)
        os.rename(p + _TMP, p)

    def append(self, name, data):
        with open(self._p(name, True), "ab") as f:
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
        p = self._p(name, True)
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
        s, d = self._p(src), self._p(dst, True)
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
        todo = [""]             # directories (relative, "/"-terminated) to read
        while todo:
            rel = todo.pop()
            try:
                it = list(os.ilistdir(self.root + "/" + rel[:-1] if rel else self.root))
            except OSError:
                continue
            for e in it:
                r = rel + e[0]
                if e[1] == _DIR:
                    if prefix.startswith(r + "/") or r.startswith(prefix):
                        todo.append(r + "/")
                elif r.startswith(prefix):
                    out.append(r)
        out.sort()
        return out

    def sync(self, name):
        pass    # every write above already closed (committed) its file

    def free(self):
        """Bytes free on the filesystem (for status), or -1."""
        try:
            s = os.statvfs(self.root)
            return s[0] * s[3]
        except (OSError, AttributeError):
            return -1
