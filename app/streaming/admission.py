"""Per-organisation stream slots, so that one customer cannot fill a process."""

import collections
import uuid


class StreamSlots:
    """Counts open streams per organisation in this process, up to a limit."""

    def __init__(self, limit_per_org: int) -> None:
        self.limit_per_org = limit_per_org
        self.open_by_org: collections.Counter[uuid.UUID] = collections.Counter()

    def try_acquire(self, org_id: uuid.UUID) -> bool:
        if self.open_by_org[org_id] >= self.limit_per_org:
            return False
        self.open_by_org[org_id] += 1
        return True

    def release(self, org_id: uuid.UUID) -> None:
        self.open_by_org[org_id] -= 1
        if self.open_by_org[org_id] <= 0:
            del self.open_by_org[org_id]

    @property
    def open_streams(self) -> int:
        return sum(self.open_by_org.values())
