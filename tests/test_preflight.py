"""`check-config`'s preflight: it refuses exactly what `serve` would refuse at start, and changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.config import StoreConfig
from gateway.domain.models import CredentialIn, PullConsumerIn
from gateway.errors import GatewayError
from gateway.preflight import preflight
from gateway.store.db import create_engine, migrate
from gateway.store.objects import Objects
from gateway.vault.crypto import Keyring, generate_key
from tests.conftest import make_config

STRIPE = {
    "id": "cred-stripe",
    "provider": "stripe",
    "base_url": "https://api.stripe.com",
    "auth": {"type": "bearer", "token": "sk_test_x"},
}


async def _store_with(url: str, keyring: Keyring, *, credential: bool = False, consumer: bool = False) -> None:
    engine = create_engine(StoreConfig(url=url))
    await migrate(engine)
    objects = Objects(engine, keyring)
    if credential:
        await objects.create_credential(CredentialIn.model_validate({**STRIPE, "id": "cred-stored"}))
    if consumer:
        await objects.create_consumer(PullConsumerIn(id="c1", kind="pull"))
    await engine.dispose()


async def _serve_start_error(config: Any, keyring: Keyring) -> str | None:
    """What starting the real app (store preparation included) raises, as `serve` would meet it."""
    try:
        server = TestServer(create_app(config, keyring=keyring, ops_on_main=True))
    except GatewayError as exc:  # what building the app refuses (an egress rule that does not parse)
        return exc.message
    try:
        await server.start_server()
    except GatewayError as exc:
        return exc.message
    finally:
        await server.close()
    return None


BAD: dict[str, tuple[dict[str, Any], str]] = {
    "sync_without_credential": (
        {"syncs": [{"id": "s1", "credential_id": "nowhere"}]},
        "syncs[0].credential_id: credential 'nowhere' is neither declared in [[credentials]] nor in the store",
    ),
    "collections_of_another_provider": (
        {
            "credentials": [STRIPE],
            "syncs": [{"id": "s1", "credential_id": "cred-stripe", "collections": ["hubspot:contact"]}],
        },
        "syncs[0].collections: hubspot:contact do not belong to provider 'stripe'",
    ),
    "consumer_without_sync": (
        {"consumers": [{"id": "c2", "kind": "pull", "sync_id": "gone"}]},
        "consumers[0].sync_id: sync 'gone' is neither declared in [[syncs]] nor in the store",
    ),
    "egress_rule_that_does_not_parse": (
        {"upstream": {"deny": ["10.0.0.0/33"]}},
        "invalid config: upstream.deny.0: '10.0.0.0/33' is neither a CIDR, an address, nor a host name (each "
        "optionally with :port)",
    ),
    "consumer_changing_kind": (
        {"consumers": [{"id": "c1", "kind": "webhook", "url": "https://example.com/h", "secret": "whsec_" + "A" * 24}]},
        "consumers[0].kind: consumer 'c1' exists with kind 'pull'; kinds never change",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_check_config_refuses_what_serve_refuses(store_url: str, keyring: Keyring, case: str) -> None:
    sections, message = BAD[case]
    await _store_with(store_url, keyring, consumer=True)
    config = make_config(store_url, keyring, **sections)
    with pytest.raises(GatewayError) as refused:
        await preflight(config, keyring)
    assert refused.value.message == message
    assert await _serve_start_error(config, keyring) == message


async def test_references_to_stored_objects_pass(store_url: str, keyring: Keyring) -> None:
    """A declared sync may name a credential that lives only in the store (made over the API)."""
    await _store_with(store_url, keyring, credential=True)
    config = make_config(store_url, keyring, syncs=[{"id": "s1", "credential_id": "cred-stored"}])
    await preflight(config, keyring)
    assert await _serve_start_error(config, keyring) is None


async def test_stored_secrets_under_another_key_are_refused(store_url: str, keyring: Keyring) -> None:
    """Redeclaring a stored credential reads it: keys that cannot decrypt it fail both, naming the key id."""
    await _store_with(store_url, keyring, credential=True)
    other = Keyring.parse(generate_key("other"))
    config = make_config(store_url, other, credentials=[{**STRIPE, "id": "cred-stored"}])
    with pytest.raises(GatewayError, match="key id 'test'") as refused:
        await preflight(config, other)
    assert await _serve_start_error(config, other) == refused.value.message


async def test_an_unmigrated_store_without_auto_migrate_is_refused(
    pg_url: str, keyring: Keyring, tmp_path: Path
) -> None:
    config = make_config(f"sqlite:///{tmp_path / 'old.db'}", keyring, store={"auto_migrate": False})
    engine = create_engine(config.store)
    async with engine.begin():  # an empty SQLite file: a store that was never migrated
        pass
    await engine.dispose()
    with pytest.raises(GatewayError, match="gateway migrate"):
        await preflight(config, keyring)


async def test_check_config_creates_no_store(tmp_path: Path, keyring: Keyring) -> None:
    """A SQLite store that does not exist yet passes (serve would create it) and is not created."""
    path = tmp_path / "fresh.db"
    await preflight(make_config(f"sqlite:///{path}", keyring, credentials=[STRIPE]), keyring)
    assert not path.exists()
    with pytest.raises(GatewayError, match=r"store.url sqlite:///.*create its directory"):
        await preflight(make_config(f"sqlite:///{tmp_path / 'no' / 'dir.db'}", keyring), keyring)
