# The storage interface the core is handed, and its error.
#
# The core never opens files.  Drivers hand it an object with these methods;
# `node.store.DirStore` (gateway: atomic writes, fsync) and the board's flash
# store implement it, `node.core.memstore.MemStore` serves tests and
# simulations (kept out of this file: a board loads this one at boot).
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
