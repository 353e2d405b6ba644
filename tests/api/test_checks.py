"""SPEC section 1, "Checks, in this order": every row, before any stream byte."""

import statistics
import time
import uuid

import asyncpg
import httpx
import pytest

from app.keys import generate_key
from tests.fixtures.factories import MakeRun, MakeTenant, Publish, run_typeid
from tests.fixtures.server import LiveServer
from tests.fixtures.sse import auth


async def get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url, headers=headers)


def assert_json_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert not response.text.startswith("data:")
    detail: str = response.json()["detail"]
    assert detail
    return detail


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Token st_live_abc",
        "Bearer st_live_not_a_real_key_000000000000000000000000",
    ],
)
async def test_events_without_a_valid_key_is_401(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    authorization: str | None,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    headers = {} if authorization is None else {"Authorization": authorization}

    response = await get(live_server.events_url(run_typeid(run_id)), headers)

    assert_json_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_events_401_does_not_depend_on_the_run_existing(
    live_server: LiveServer,
) -> None:
    unknown_run = run_typeid(uuid.uuid4())

    response = await get(live_server.events_url(unknown_run))

    assert_json_error(response, 401)


@pytest.mark.parametrize(
    "authorization_format", ["bearer {}", "BEARER {}", "Bearer    {}"]
)
async def test_events_accepts_any_scheme_case_and_surrounding_spaces(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
    authorization_format: str,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    terminal = await publish(run_id, "run_completed")

    response = await get(
        live_server.events_url(run_typeid(run_id)),
        {
            "Authorization": authorization_format.format(tenant.key),
            "Last-Event-ID": terminal.typeid,
        },
    )

    assert response.status_code == 204


async def test_events_with_a_revoked_key_is_401(
    live_server: LiveServer,
    db: asyncpg.Connection,
    make_tenant: MakeTenant,
    make_run: MakeRun,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    await db.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE org_id = $1", tenant.org_id
    )

    response = await get(live_server.events_url(run_typeid(run_id)), auth(tenant.key))

    assert_json_error(response, 401)


async def test_events_error_bodies_never_echo_the_key(
    live_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    bogus = generate_key()

    responses = [
        await get(live_server.events_url(run_typeid(run_id)), auth(bogus)),
        await get(live_server.events_url("run_nope"), auth(tenant.key)),
    ]

    for response in responses:
        assert bogus not in response.text
        assert tenant.key not in response.text


async def test_events_for_an_org_without_runtime_is_503(
    live_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    tenant = await make_tenant(has_runtime=False)
    run_id = await make_run(tenant)

    response = await get(live_server.events_url(run_typeid(run_id)), auth(tenant.key))

    assert "runtime" in assert_json_error(response, 503)


async def test_events_503_for_runtime_comes_before_404(
    live_server: LiveServer, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant(has_runtime=False)

    response = await get(
        live_server.events_url(run_typeid(uuid.uuid4())), auth(tenant.key)
    )

    assert_json_error(response, 503)


@pytest.mark.parametrize(
    "run_path",
    [
        "run_01h455vb4pex5vsknk084sn02q",
        "evt_01h455vb4pex5vsknk084sn02q",
        "RUN_01H455VB4PEX5VSKNK084SN02Q",
        "run_01H455VB4PEX5VSKNK084SN02Q",
        "run_",
        "not-a-run",
        "1; DROP TABLE runs; --",
        "' OR '1'='1",
        "%2Fetc%2Fpasswd",
        "run_" + "a" * 10_000,
        "0000000000000000000000000000000000000",
        "{12345678-1234-1234-1234-123456789abc}",
        "",
        "run_x%2Fy",
        "a/b",
    ],
)
async def test_events_for_an_unknown_or_malformed_run_is_404(
    live_server: LiveServer, make_tenant: MakeTenant, run_path: str
) -> None:
    tenant = await make_tenant()

    response = await get(live_server.events_url(run_path), auth(tenant.key))

    assert_json_error(response, 404)
    assert response.json()["code"] == "run_not_found"


@pytest.mark.parametrize("spelling", ["typeid", "uuid", "UUID"])
async def test_events_accepts_the_run_as_typeid_or_uuid(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
    spelling: str,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    terminal = await publish(run_id, "run_cancelled")
    path = {
        "typeid": run_typeid(run_id),
        "uuid": str(run_id),
        "UUID": str(run_id).upper(),
    }[spelling]

    response = await get(
        live_server.events_url(path),
        auth(tenant.key, **{"Last-Event-ID": terminal.typeid}),
    )

    assert response.status_code == 204


async def test_events_for_another_orgs_run_is_403(
    live_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    owner = await make_tenant("owner")
    stranger = await make_tenant("stranger")
    run_id = await make_run(owner)

    response = await get(live_server.events_url(run_typeid(run_id)), auth(stranger.key))

    assert_json_error(response, 403)


async def test_events_403_and_404_cost_about_the_same(
    live_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    """A faster 404 would let a caller probe which run ids exist elsewhere."""
    owner = await make_tenant("owner")
    stranger = await make_tenant("stranger")
    foreign_url = live_server.events_url(run_typeid(await make_run(owner)))
    unknown_url = live_server.events_url(run_typeid(uuid.uuid4()))
    timings: dict[str, list[float]] = {foreign_url: [], unknown_url: []}

    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(60):
            for url in timings:
                started = time.perf_counter()
                response = await client.get(url, headers=auth(stranger.key))
                timings[url].append(time.perf_counter() - started)
                assert response.status_code in (403, 404)

    foreign = statistics.median(timings[foreign_url])
    unknown = statistics.median(timings[unknown_url])
    assert 0.5 < foreign / unknown < 2.0, (foreign, unknown)
