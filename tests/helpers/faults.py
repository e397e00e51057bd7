"""A storage whose writes fail on demand, as a full disk's do."""

from taylorglo_tf.coordinator.storage import WRITE_METHODS as WRITES
from taylorglo_tf.coordinator.storage import SqliteUnavailable


class FaultyStorage:
    """Wraps a storage; while ``full`` is set, every write fails as a full disk does."""

    def __init__(self, storage):
        self._storage = storage
        self.full = False
        self.refused = 0

    def __getattr__(self, name):
        method = getattr(self._storage, name)
        if name not in WRITES:
            return method

        def write(*args, **kwargs):
            if self.full:
                self.refused += 1
                raise SqliteUnavailable("database 'search.db': database or disk is full")
            return method(*args, **kwargs)

        return write
