"""Directory store for gateways: the core's Store interface over files.

Atomic replace is write-to-temp, fsync, rename, fsync of the directory, so a
`kill -9` or power loss leaves either the old or the new bytes.  Appends go
straight to the OS (they survive a killed process); `sync()` makes them
durable against power loss and is called where a record must not be lost.
"""
import os

from node.core.store import StoreError


class DirStore:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self._clean_temps()

    def _path(self, name):
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise StoreError("bad object name: %r" % name)
        return os.path.join(self.root, *name.split("/"))

    def _clean_temps(self):
        # A crash between temp write and rename leaves *.tmp files: discard.
        for d, _, files in os.walk(self.root):
            for f in files:
                if f.endswith(".aegis-tmp"):
                    os.unlink(os.path.join(d, f))

    def _fsync_dir(self, path):
        fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, name):
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write(self, name, data):
        path = self._path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".aegis-tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._fsync_dir(path)

    def append(self, name, data):
        path = self._path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "ab") as f:
            f.write(data)

    def read_at(self, name, offset, n):
        try:
            with open(self._path(name), "rb") as f:
                f.seek(offset)
                return f.read(n)
        except FileNotFoundError:
            raise StoreError("no such object: %s" % name)

    def write_at(self, name, offset, data):
        path = self._path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def size(self, name):
        try:
            return os.path.getsize(self._path(name))
        except FileNotFoundError:
            return -1

    def rename(self, src, dst):
        s, d = self._path(src), self._path(dst)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        try:
            os.replace(s, d)
        except FileNotFoundError:
            raise StoreError("no such object: %s" % src)
        self._fsync_dir(d)

    def delete(self, name):
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass

    def list(self, prefix):
        out = []
        for d, _, files in os.walk(self.root):
            for f in files:
                if f.endswith(".aegis-tmp"):
                    continue
                rel = os.path.relpath(os.path.join(d, f), self.root).replace(os.sep, "/")
                if rel.startswith(prefix):
                    out.append(rel)
        return sorted(out)

    def sync(self, name):
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
