"""Directory store for gateways: the core's Store interface over files.

Atomic replace is write-to-temp, fsync, rename, fsync of the directory, so a
`kill -9` or power loss leaves either the old or the new bytes.  Appends go
straight to the OS (they survive a killed process); `sync()` makes them
durable against power loss and is called where a record must not be lost.

Objects written piecewise (`write_at`: a transfer's .part file) stay open
between pieces, so a 4 KiB chunk costs one pwrite, not open/mkdir/close;
every call that replaces, moves or deletes an object closes it first.

`sync_soon(name)` starts the fsync of an object on a worker thread (fsync
releases the GIL), so a finished push is verified while its bytes reach the
disk; `sync(name)` waits for it.  Until then a rename carries the pending
fsync along and leaves the directory unsynced: a name is worth making
durable only once its data is, and whoever needs both calls sync() and then
rename() into the final place (host.install does).
"""
import os
from concurrent.futures import ThreadPoolExecutor

from node.core.store import StoreError


class DirStore:
    OPEN_MAX = 8        # objects kept open for write_at (oldest closed first)

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self._open = {}     # name -> fd for write_at
        self._syncing = {}  # name -> _Fsync started by sync_soon
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

    def _close(self, name):
        fd = self._open.pop(name, None)
        if fd is not None:
            os.close(fd)

    def close(self):
        for name in list(self._open):
            self._close(name)
        for name in list(self._syncing):
            self._syncing.pop(name).wait()

    def read(self, name):
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write(self, name, data):
        path = self._path(name)
        self._close(name)
        self._syncing.pop(name, None)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".aegis-tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._fsync_dir(path)

    def append(self, name, data):
        self._again(name)                   # as in write_at
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

    def _again(self, name):
        # Bytes written after sync_soon(name): sync() must fsync once more.
        # The background fsync is kept, not dropped: it ran on a dup of the
        # same open file, so an error it hit (EIO) is reported to it alone
        # (Linux reports a writeback error once per open file), and only
        # its wait() can still raise it.
        pending = self._syncing.get(name)
        if pending is not None:
            pending.again = True

    def write_at(self, name, offset, data):
        if self._syncing:
            self._again(name)
        fd = self._open.get(name)
        if fd is None:
            path = self._path(name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            if len(self._open) >= self.OPEN_MAX:
                self._close(next(iter(self._open)))
            self._open[name] = fd
        view = memoryview(data)
        while view:     # a short write (disk filling up) must not leave a hole
            n = os.pwrite(fd, view, offset)
            if n <= 0:
                raise OSError("short write to %s at offset %d" % (name, offset))
            view, offset = view[n:], offset + n

    def size(self, name):
        try:
            return os.path.getsize(self._path(name))
        except FileNotFoundError:
            return -1

    def rename(self, src, dst):
        s, d = self._path(src), self._path(dst)
        self._close(src)
        self._close(dst)
        self._syncing.pop(dst, None)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        try:
            os.replace(s, d)
        except FileNotFoundError:
            raise StoreError("no such object: %s" % src)
        pending = self._syncing.pop(src, None)
        if pending is not None:
            self._syncing[dst] = pending    # the data is still on its way
        else:
            self._fsync_dir(d)

    def delete(self, name):
        self._close(name)
        self._syncing.pop(name, None)   # the worker finishes on its own fd
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass

    def list(self, prefix):
        out = []
        # Walk only the directory the prefix names (a push's offer lists
        # incoming/, which must not cost a walk over every stored package).
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self._path(head) if head else self.root
        for d, _, files in os.walk(top):
            for f in files:
                if f.endswith(".aegis-tmp"):
                    continue
                rel = os.path.relpath(os.path.join(d, f), self.root).replace(os.sep, "/")
                if rel.startswith(prefix):
                    out.append(rel)
        return sorted(out)

    def sync_soon(self, name):
        """Start making `name`'s data durable; sync(name) waits for it."""
        if name in self._syncing:
            return
        fd = self._open.get(name)
        try:
            fd = os.dup(fd) if fd is not None else os.open(self._path(name), os.O_RDONLY)
        except FileNotFoundError:
            return
        self._syncing[name] = _Fsync(fd)

    def sync(self, name):
        pending = self._syncing.pop(name, None)
        if pending is not None:
            pending.wait()          # raises what the background fsync hit
            if not pending.again:
                return
        fd = self._open.get(name)
        if fd is not None:
            os.fsync(fd)
            return
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)



_worker = None      # one thread for every store's background fsyncs


def _forget_worker():
    global _worker
    _worker = None      # a forked child has no such thread: start its own


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker)


class _Fsync:
    """fsync of one file descriptor (owned, closed when done) on the worker
    thread; wait() returns when it is done and raises what it raised."""

    def __init__(self, fd):
        global _worker
        if _worker is None:
            _worker = ThreadPoolExecutor(1, thread_name_prefix="aegis-fsync")
        self.fd = fd
        self.again = False      # written since: sync() fsyncs again after it
        self.job = _worker.submit(self._run)

    def _run(self):
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)

    def wait(self):
        self.job.result()
