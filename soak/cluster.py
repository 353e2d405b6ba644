"""The system under soak: a throwaway database, and how its `serve` instances run."""

import contextlib
from collections.abc import AsyncIterator

from app.db.engine import create_engine
from app.db.migrate import upgrade_to_head
from tests.fixtures.postgres import throwaway_database

# Short intervals so that faults are noticed and recovered from many times
# over a few minutes: a stuck send is dropped after 3 s, a dead listener is
# noticed within 2 s, and clients come back after 0.5 s. A live buffer of 50
# events makes a slow client overflow within seconds and catch up from the
# database; loopback's socket buffers hold megabytes, so send timeouts need
# more data than a soak writes (tests/streaming/test_slow_clients.py has them).
SERVE_ENVIRONMENT = {
    "HEARTBEAT_SECONDS": "2",
    "SEND_TIMEOUT_SECONDS": "3",
    "LISTENER_CHECK_SECONDS": "1",
    "RETRY_MS": "500",
    "STREAM_BUFFER_EVENTS": "50",
    "LOG_LEVEL": "info",
}


@contextlib.asynccontextmanager
async def soak_database(server_url: str | None) -> AsyncIterator[str]:
    """A migrated database of the soak's own, dropped at the end.

    Without `server_url`, an embedded PostgreSQL in a temporary folder.
    """
    with throwaway_database(server_url) as url:
        engine = create_engine(url, pool_size=1)
        await upgrade_to_head(engine)
        await engine.dispose()
        yield url
