"""Minting scoped read tokens over HTTP, for a backend to hand to a browser."""

import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import CallerDep, ServicesDep
from app.api.runs import load_run_for
from app.db import tokens as token_queries
from app.errors import RunForbidden
from app.ids import RUN_PREFIX, format_id, parse_run_id
from app.tokens import DEFAULT_TTL, MAX_TTL

router = APIRouter()

TOKENS_CANNOT_MINT = "a read token cannot mint tokens: use your organisation's API key"


class ReadTokenRequest(BaseModel):
    ttl_seconds: int = Field(
        default=int(DEFAULT_TTL.total_seconds()),
        ge=1,
        le=int(MAX_TTL.total_seconds()),
        description="How long the token may be used, in seconds.",
    )


class ReadToken(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    run_id: str
    expires_at: datetime.datetime


@router.post(
    "/api/v1/improve-runs/{run_id}/read-tokens",
    status_code=201,
    responses={
        401: {"description": "Missing, unknown or revoked API key."},
        403: {"description": "Another organisation's run, or a read token."},
        404: {"description": "No run with this id."},
    },
)
async def create_read_token(
    run_id: str,
    caller: CallerDep,
    services: ServicesDep,
    request: ReadTokenRequest | None = None,
) -> ReadToken:
    """Mint a short-lived token that can read this run's events and nothing else.

    Give it to a browser instead of your API key: it is accepted as a bearer
    token on this run's events route until it expires.
    """
    if caller.is_read_token:
        raise RunForbidden(TOKENS_CANNOT_MINT)
    ttl = datetime.timedelta(seconds=(request or ReadTokenRequest()).ttl_seconds)

    async with services.database.connection() as conn:
        run = await load_run_for(conn, caller, parse_run_id(run_id))
        token, expires_at = await token_queries.create_read_token(
            conn, run_id=run.id, org_id=run.org_id, ttl=ttl
        )
    return ReadToken(
        token=token, run_id=format_id(RUN_PREFIX, run.id), expires_at=expires_at
    )
