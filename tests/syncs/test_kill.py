"""kill -9 of the replica polling the syncs during their backfill loses no change: the PostgreSQL
consumer's tables end identical to the upstreams, row by row (tests/syncs/kill.py; bench/chaos.py
``--scenario syncs`` runs the long version)."""

from __future__ import annotations

from pathlib import Path

from tests.ops.process import Deployment
from tests.syncs.kill import CAPTURE_LEASE_TTL, PAGE, PROVIDERS, SyncKill

ROUNDS = 3
RECORDS = 300  # per sandbox


async def test_kill_9_during_backfill_loses_nothing(tmp_path: Path, pg_url: str) -> None:
    sections = {"store": {"url": pg_url}, "log": {"format": "json", "level": "warning"},
                "stream": {"capture_lease_ttl": CAPTURE_LEASE_TTL}}  # fmt: skip
    deployment = Deployment.create(tmp_path, sections)
    await deployment.cli("migrate")
    kill = SyncKill(deployment, tmp_path, pg_url, records=RECORDS, seed=16)
    async with kill.running():
        tally = await kill.run(ROUNDS)
    summary = tally.summary()
    assert tally.rounds == ROUNDS and tally.upstream_changes == 3 * ROUNDS * len(PROVIDERS), summary
    assert tally.kills_during_backfill >= 1, summary
    assert tally.missing == tally.extra == tally.stale == 0, summary
    # each round creates one record and deletes one per sandbox
    assert tally.mirrored_rows == tally.upstream_records == RECORDS * len(PROVIDERS), summary
    assert tally.duplicate_inserts <= ROUNDS * PAGE, summary
