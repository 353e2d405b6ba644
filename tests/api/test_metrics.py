"""Prometheus metrics, read after real traffic and checked for the right counts."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.factories import MakeRun, MakeTenant, Publish, run_typeid
from tests.fixtures.server import LiveServer
from tests.fixtures.sse import auth, open_stream, read_all_events


async def scrape(server: LiveServer) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{server.base_url}/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


async def test_metrics_count_streams_events_and_rejections(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    url = live_server.events_url(run_typeid(run_id))
    for _ in range(3):
        await publish(run_id, "phase_changed")
    before = await scrape(live_server)

    async with open_stream(url, tenant.key) as reader:
        replayed = [await reader.next_event() for _ in range(3)]
        during = await scrape(live_server)
        await publish(run_id, "run_completed")
        live = await reader.read_to_end()
    async with httpx.AsyncClient(timeout=10) as client:
        await client.get(url, headers=auth("st_live_nope"))
    await read_all_events(url, tenant.key, headers={"Last-Event-ID": replayed[0]["id"]})  # type: ignore[index]
    after = await scrape(live_server)

    assert len(live) == 1
    assert delta(before, during, "selftune_streams_open{}") == 1
    assert delta(before, after, "selftune_streams_open{}") == 0
    assert delta(before, after, "selftune_streams_opened_total{}") == 2
    assert delta(before, after, "selftune_streams_closed_total{reason=terminal}") == 2
    assert delta(before, after, "selftune_events_sent_total{source=replay}") == 6
    assert delta(before, after, "selftune_events_sent_total{source=live}") == 1
    assert delta(before, after, "selftune_requests_rejected_total{status=401}") == 1
    assert delta(before, after, "selftune_commit_to_fanout_seconds_count{}") == 1
