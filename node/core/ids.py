# Node ids and the error for bad mesh input: all a board needs to name its
# topics (fleet.py), split from envelope.py so a board without modules does
# not load the envelope code (docs/BOARDS.md "Heap").  envelope.py re-exports
# these names; EnvelopeError is one class whichever module it is taken from.
MAX_ID = 64
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"


class EnvelopeError(ValueError):
    pass


def _check_chars(what, s, allowed, maxlen):
    if type(s) is not str:
        raise EnvelopeError("%s must be text, got %s" % (what, type(s).__name__))
    if not 1 <= len(s) <= maxlen:
        raise EnvelopeError("%s must be 1..%d characters, got %d"
                            % (what, maxlen, len(s)))
    for c in s:
        if c not in allowed:
            raise EnvelopeError("%s %r has character %r; allowed: A-Z a-z 0-9 _ . -"
                                % (what, s, c))


def check_node_id(node_id, what="node id"):
    """Node ids (and fleet names): 1..64 chars of [A-Za-z0-9_.-]."""
    _check_chars(what, node_id, _ID_CHARS, MAX_ID)
    if node_id in (".", ".."):
        # They become MQTT levels and sometimes file names; keep them inert.
        raise EnvelopeError("%s must not be '.' or '..'" % what)
