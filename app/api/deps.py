"""Request dependencies: the service's shared state and the caller's key."""

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.db import keys as key_queries
from app.db import tokens as token_queries
from app.db.engine import Database
from app.errors import NotAuthenticated, RuntimeUnavailable
from app.keys import hash_key
from app.streaming.admission import StreamSlots
from app.streaming.feeds import RunFeeds
from app.streaming.listener import Listener
from app.streaming.supervisor import StreamSupervisor
from app.tokens import hash_token, is_read_token

MISSING_KEY = "missing API key: send the header 'Authorization: Bearer <your API key>'"
NOT_BEARER = (
    "the Authorization header must use the Bearer scheme: "
    "'Authorization: Bearer <your API key>'"
)
BAD_KEY = "the API key is not valid: it is unknown or has been revoked"
BAD_TOKEN = "the read token is not valid: mint a new one for this run"
EXPIRED_TOKEN = "the read token has expired: mint a new one for this run"
NO_RUNTIME = (
    "Cloud Improve is not available for this organisation: no runtime is "
    "configured; ask your administrator to set one up"
)


@dataclass
class Services:
    """What the lifespan builds once per process and every request shares."""

    settings: Settings
    database: Database
    feeds: RunFeeds
    listener: Listener
    slots: StreamSlots
    supervisor: StreamSupervisor
    shutting_down: bool = False


@dataclass(frozen=True)
class Caller:
    """Who is asking: an organisation, and for a read token the one run it may read."""

    org_id: uuid.UUID
    token_run_id: uuid.UUID | None = None

    @property
    def is_read_token(self) -> bool:
        return self.token_run_id is not None


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def read_bearer_key(authorization: str | None) -> str:
    """The key in an `Authorization: Bearer <key>` header (RFC 9110, 11.6.2)."""
    if authorization is None or not authorization.strip():
        raise NotAuthenticated(MISSING_KEY)
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise NotAuthenticated(NOT_BEARER)
    key = key.strip()
    if not key:
        raise NotAuthenticated(MISSING_KEY)
    return key


async def authenticate(request: Request, services: ServicesDep) -> Caller:
    """Checks 1 and 2 of SPEC's table: a live key or read token, of an org
    with a runtime."""
    bearer = read_bearer_key(request.headers.get("authorization"))
    if is_read_token(bearer):
        return await authenticate_read_token(bearer, services)

    # Looked up by hash: the plaintext is never compared, so timing says
    # nothing about which keys exist.
    async with services.database.connection() as conn:
        owner = await key_queries.find_active_key_owner(conn, hash_key(bearer))
    if owner is None:
        raise NotAuthenticated(BAD_KEY)
    if not owner.has_runtime:
        raise RuntimeUnavailable(NO_RUNTIME)
    return Caller(org_id=owner.org_id)


async def authenticate_read_token(token: str, services: Services) -> Caller:
    async with services.database.connection() as conn:
        grant = await token_queries.find_read_token(conn, hash_token(token))
    if grant is None:
        raise NotAuthenticated(BAD_TOKEN)
    if grant.is_expired:
        raise NotAuthenticated(EXPIRED_TOKEN)
    if not grant.has_runtime:
        raise RuntimeUnavailable(NO_RUNTIME)
    return Caller(org_id=grant.org_id, token_run_id=grant.run_id)


CallerDep = Annotated[Caller, Depends(authenticate)]
