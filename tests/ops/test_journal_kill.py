"""kill -9 of a real gateway during mutations on PostgreSQL loses no upstream change and duplicates no create."""

from __future__ import annotations

from pathlib import Path

from tests.ops.chaos import RECOVERY_LEASE, Chaos
from tests.ops.process import Deployment


async def test_kill_9_during_mutations_loses_nothing(tmp_path: Path, pg_url: str) -> None:
    """Three rounds of clients writing to Stripe, HubSpot and Salesforce sandboxes through a gateway
    killed with SIGKILL mid-flight: after each restart every upstream change is in the stream (or, for
    creates only change capture can settle, answered 409 mutation_outcome_unknown), and retried
    Idempotency-Keys never create a record twice."""
    sections = {
        "store": {"url": pg_url},
        "log": {"format": "json", "level": "warning"},
        "mutations": {"recovery_lease": RECOVERY_LEASE},
    }
    deployment = Deployment.create(tmp_path, sections)
    await deployment.cli("migrate")
    chaos = Chaos(deployment, tmp_path, pg_url, clients=3, seed=12)
    async with chaos.running():
        tally = await chaos.run(rounds=3)
    summary = tally.summary()
    assert tally.rounds == 3 and tally.cut_off >= 1, summary
    assert tally.missing == 0, summary
    assert tally.duplicates == 0, summary
    assert tally.upstream_records > 0, summary
