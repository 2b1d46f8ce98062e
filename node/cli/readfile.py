"""Reading a file named on the `aegis` command line (a package, a module)."""


def read_or_die(path, die):
    """The file's bytes; an unreadable file is a usage error: die(..., 2)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        die("cannot read %s: %s" % (path, e), 2)
