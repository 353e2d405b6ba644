"""The errors a caller can act on. Nothing here knows about HTTP."""


class AppError(Exception):
    """Base of every error the service reports to a user in words."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConfigError(AppError):
    """The process cannot start with the configuration it was given."""


class NotAuthenticated(AppError):
    """No usable API key: missing, malformed, unknown or revoked."""


class RuntimeUnavailable(AppError):
    """The key's organisation has no Cloud Improve runtime configured."""


class RunNotFound(AppError):
    """No run with that id (or the id is not a run id at all)."""


class RunForbidden(AppError):
    """The run exists but belongs to another organisation."""


class RunPruned(AppError):
    """The run's event history has been removed by retention."""


class InvalidCursor(AppError):
    """The resume cursor is malformed or is not an event of this run."""


class InvalidRequest(AppError):
    """A request body or parameter the caller must correct."""


class TooManyStreams(AppError):
    """The organisation already has as many open streams as a process allows."""


class ServiceUnavailable(AppError):
    """The database cannot be reached right now."""


class ServiceBusy(ServiceUnavailable):
    """Every pooled database connection stayed in use past the pool timeout."""


class NotFound(AppError):
    """A CLI argument names an organisation, key or run that does not exist."""


class EventRejected(AppError):
    """The database refused an event under the publish contract."""
