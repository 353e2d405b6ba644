"""Schemathesis over the OpenAPI document: generated requests never get a 5xx,
an undocumented status, or a body unlike the documented one."""

import asyncio

import asyncpg
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case

from tests.fixtures.factories import seed_run
from tests.fixtures.server import LiveServer


async def test_api_conforms_to_its_openapi_document(
    live_server: LiveServer, db: asyncpg.Connection
) -> None:
    key, _run_id = await seed_run(db)
    schema = schemathesis.openapi.from_url(f"{live_server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    strategies = [operation.as_strategy() for operation in operations]

    @given(case=st.one_of(strategies))
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: Case) -> None:  # type: ignore[type-arg]
        case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, timeout=10)

    await asyncio.to_thread(check)
