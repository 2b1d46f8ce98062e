# Bounded ring of recent events with a running sequence number, so a
# follower can ask "everything after n" and learn how many it missed.


class Ring:
    def __init__(self, cap=1000):
        if cap < 1:
            raise ValueError("ring capacity must be >= 1")
        self.cap = cap
        self._buf = [None] * cap
        self.next = 0  # number of the next item appended

    def append(self, item):
        self._buf[self.next % self.cap] = item
        self.next += 1

    def __len__(self):
        return min(self.next, self.cap)

    def since(self, n):
        """(items numbered >= n still held, number of the first returned)."""
        first = max(n, self.next - self.cap, 0)
        return [self._buf[i % self.cap] for i in range(first, self.next)], first
