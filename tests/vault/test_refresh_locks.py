"""The OAuth2 refresher keeps a lock per credential only while a refresh of it is on."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, cast

from pydantic import SecretStr

from gateway.domain.models import OAuth2Auth
from gateway.domain.objects import Credential
from gateway.observability.metrics import Metrics
from gateway.store.objects import Objects
from gateway.vault.credentials import OAuth2Refresher
from tests.pacing.conftest import make_credential


class Store:
    """The one read ``refresh`` makes under its lock: another caller refreshed meanwhile."""

    engine: Any = None

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0

    async def credential(self, credential_id: str) -> Credential:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        await asyncio.sleep(0)
        self.inside -= 1
        credential = make_credential(credential_id)
        auth = OAuth2Auth(
            type="oauth2",
            access_token=SecretStr("fresh"),
            refresh_token=SecretStr("r"),
            token_url="http://127.0.0.1/token",
            client_id="c",
            client_secret=SecretStr("s"),
        )
        return dataclasses.replace(credential, auth=auth)


async def no_post(url: str, form: dict[str, str]) -> tuple[int, Any]:
    raise AssertionError("the stored token is fresh: no refresh is needed")


async def test_refresh_locks_are_dropped_and_still_serialise_one_credential() -> None:
    store = Store()
    refresher = OAuth2Refresher(cast(Objects, store), Metrics(), no_post)
    for start in range(0, 10_000, 500):
        batch = range(start, start + 500)
        await asyncio.gather(*(refresher.refresh(make_credential(f"c{n}"), stale_token="old") for n in batch))
        assert len(refresher._locks) == 0
    assert store.most_inside > 1  # distinct credentials went in together
    store.most_inside = 0
    found = await asyncio.gather(*(refresher.refresh(make_credential("one"), stale_token="old") for _ in range(50)))
    assert store.most_inside == 1  # one credential: one at a time
    assert all(isinstance(c.auth, OAuth2Auth) and c.auth.access_token.get_secret_value() == "fresh" for c in found)
    assert len(refresher._locks) == 0
