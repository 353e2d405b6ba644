"""Settings read from the environment, named after the variables in SPEC section 4."""

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.errors import ConfigError

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    database_url: str | None = None
    heartbeat_seconds: float = Field(default=15.0, gt=0, le=3600, allow_inf_nan=False)
    retry_ms: int = Field(default=3000, ge=0, le=3_600_000)
    replay_page_size: int = Field(default=500, ge=1, le=50_000)
    database_pool_size: int = Field(default=10, ge=1, le=500)
    database_connect_timeout: float = Field(
        default=30.0, ge=0, le=3600, allow_inf_nan=False
    )
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    # Browser origins allowed to call the API (CORS), comma-separated;
    # empty allows none.
    allowed_origins: str = ""
    # Serve /dev/runs/{id}, a live timeline page; `dev` turns it on.
    dev_pages: bool = False

    # Not in SPEC's table; operators rarely need them, tests do.
    send_timeout_seconds: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    listener_check_seconds: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    stream_buffer_events: int = Field(default=2000, ge=1)
    max_streams_per_org: int = Field(default=1000, ge=1)

    @property
    def allowed_origin_list(self) -> list[str]:
        return [
            origin.strip()
            for origin in self.allowed_origins.split(",")
            if origin.strip()
        ]

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql://", "postgresql+asyncpg://")):
            raise ValueError("must start with postgresql:// or postgresql+asyncpg://")
        return value

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ConfigError(
                "DATABASE_URL is not set: give it a postgresql:// URL, "
                "for example postgresql://postgres@127.0.0.1:5432/selftune"
            )
        return self.database_url


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning a validation failure into one readable line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper()
            problems.append(f"{name}: {error['msg']}")
        raise ConfigError("bad configuration: " + "; ".join(problems)) from None
