"""[[credentials]], [[syncs]] and [[consumers]] in the config are upserted at every start."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.http import appkeys
from gateway.vault.crypto import Keyring
from tests.conftest import make_config

DECLARED: dict[str, Any] = {
    "credentials": [
        {
            "id": "cred-rest",
            "provider": "rest",
            "base_url": "https://api.example.test",
            "auth": {"type": "bearer", "token": "declared-token-1"},
        }
    ],
    "syncs": [{"id": "sync-rest", "credential_id": "cred-rest"}],  # proxy-only: rest has no change capture
    "consumers": [{"id": "pull-1", "kind": "pull", "sync_id": "sync-rest"}],
}


async def _start(
    aiohttp_client: Any, store_url: str, keyring: Keyring, declared: dict[str, Any]
) -> TestClient[Any, Any]:
    app = create_app(make_config(store_url, keyring, **declared), keyring=keyring, ops_on_main=True)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def test_declared_objects_exist_after_start_and_restarts_are_idempotent(
    aiohttp_client: Any, store_url: str, keyring: Keyring
) -> None:
    """Two starts with the same config give one of each object; a changed config updates in place."""
    first = await _start(aiohttp_client, store_url, keyring, DECLARED)
    objects = first.app[appkeys.OBJECTS]
    assert [c.id for c in await objects.list_credentials()] == ["cred-rest"]
    await first.close()

    changed = {
        **DECLARED,
        "syncs": [{**DECLARED["syncs"][0], "options": {"poll_interval": "30"}}],
        "credentials": [{**DECLARED["credentials"][0], "base_url": "https://v2.example.test"}],
    }
    second = await _start(aiohttp_client, store_url, keyring, changed)
    objects = second.app[appkeys.OBJECTS]
    assert [s.options for s in await objects.list_syncs()] == [{"poll_interval": "30"}]
    credential = await objects.credential("cred-rest")
    assert credential.base_url == "https://v2.example.test"
    assert credential.auth.type == "bearer"
    assert [c.id for c in await objects.list_consumers()] == ["pull-1"]
