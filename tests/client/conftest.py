"""Fixtures for the client and `tail` tests: a relay, runs with whole lifecycles."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.cli.conftest import restore_logging
from tests.client.relay import Relay, start_relay
from tests.fixtures.factories import Publish, PublishedEvent
from tests.fixtures.server import LiveServer

__all__ = ["restore_logging"]

PublishLifecycle = Callable[..., Awaitable[list[PublishedEvent]]]

# A short run ending each possible way; scores ride in payloads as the
# runtime sends them.
OUTCOMES: dict[str, tuple[str, dict[str, Any]]] = {
    "succeeded": ("run_completed", {"status": "succeeded"}),
    "no_winner": ("run_completed", {"status": "no_winner"}),
    "failed": ("run_failed", {"status": "failed"}),
    "cancelled": ("run_cancelled", {"status": "cancelled"}),
}


def port_of(base_url: str) -> int:
    port = httpx.URL(base_url).port
    if port is None:
        raise ValueError(f"no port in {base_url}")
    return port


@pytest.fixture
async def relay(live_server: LiveServer) -> AsyncIterator[Relay]:
    async with start_relay(port_of(live_server.base_url)) as started:
        yield started


@pytest.fixture
def publish_lifecycle(publish: Publish) -> PublishLifecycle:
    """Publish a run's events from enqueued to `outcome`, or only up to the
    last candidate with `outcome=None`."""

    async def publish_all(
        run_id: uuid.UUID, outcome: str | None = "succeeded"
    ) -> list[PublishedEvent]:
        published = [
            await publish(run_id, "run_enqueued"),
            await publish(run_id, "run_started"),
            await publish(run_id, "phase_changed", phase="generating"),
            await publish(run_id, "phase_changed", phase="evaluating"),
            await publish(
                run_id,
                "candidate_persisted",
                candidate_id="cand_a",
                payload={"score": 0.81, "baseline_score": 0.7, "revision": 1},
            ),
            await publish(
                run_id,
                "candidate_persisted",
                candidate_id="cand_b",
                payload={"score": 0.64, "baseline_score": 0.7, "revision": 2},
            ),
        ]
        if outcome is None:
            return published
        if outcome == "succeeded":
            published.append(
                await publish(
                    run_id,
                    "proposal_created",
                    proposal_id="prop_a",
                    payload={"candidate_id": "cand_a", "improvement": 0.11},
                )
            )
        event_type, fields = OUTCOMES[outcome]
        published.append(
            await publish(
                run_id, event_type, payload={"message": f"ended: {outcome}"}, **fields
            )
        )
        return published

    return publish_all
