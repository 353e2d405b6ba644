"""An embedded PostgreSQL 16 (pgserver) for `dev` and for tests without a server.

pgserver runs the server as any user, root included, and listens only on a
Unix socket in the data folder, so it never takes a TCP port.
"""

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from app.errors import ConfigError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def start_embedded_postgres(data_dir: str | Path) -> Iterator[str]:
    """Start (or reuse) the server for `data_dir`, yield its URL, stop it after."""
    # platformdirs warns when XDG_RUNTIME_DIR is unset, as it is under root
    # and in CI; pgserver only uses it for a lock file.
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(str(data_dir), cleanup_mode="stop")  # type: ignore[attr-defined]
    except Exception as exc:
        # pgserver reports a failed initdb or start with several exception
        # types; the folder is what the user can act on.
        raise ConfigError(
            f"the embedded PostgreSQL in {data_dir} did not start ({exc}); "
            "remove the folder to start afresh, or set DATABASE_URL"
        ) from exc

    logger.info("embedded_postgres.started", extra={"data_dir": str(data_dir)})
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        logger.info("embedded_postgres.stopped", extra={"data_dir": str(data_dir)})
