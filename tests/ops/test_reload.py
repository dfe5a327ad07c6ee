"""Keys and config change under a running ``gateway serve`` without a failed call.

Real processes on a SQLite store (and, for the workers, PostgreSQL and Redis), a real upstream on
loopback, the ``gateway`` CLI as an operator runs it: SIGHUP through ``gateway reload`` (the pid
file), ``gateway keys rotate`` gated on the replicas' heartbeats, a replica that meets a key id it
lacks re-reading its key file, and ``gateway restart`` replacing a supervisor's workers.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config import load_config
from gateway.http import appkeys
from gateway.reload import Reloader, changed_keys
from gateway.vault.crypto import generate_key
from tests.conftest import GatewayFactory
from tests.console.helpers import sign_in
from tests.ops.process import Deployment, start_gateway, write_config
from tests.ops.rotation import Load, add_credentials, drill, keyed_deployment, loaded, logged, reloaded, run_cli
from tests.support import free_port, poll
from tests.upstream.helpers import Upstream, start_upstream


def sealed_key_ids(tmp_path: Path, credential_id: str = "%") -> set[str]:
    with contextlib.closing(sqlite3.connect(tmp_path / "gateway.db")) as db:
        rows = db.execute("SELECT auth_secret FROM credentials WHERE id LIKE ?", (credential_id,)).fetchall()
    return {sealed.split(":")[1] for (sealed,) in rows}


async def rotation_setup(tmp_path: Path, aiohttp_server: Any, first_key: str) -> tuple[Deployment, Path, Upstream, str]:
    """A keyed deployment on ``first_key``, an upstream, and an admin token."""
    deployment, key_file = keyed_deployment(tmp_path, [first_key])
    upstream = await start_upstream(aiohttp_server)
    admin = await deployment.cli("tokens", "create", "--name", "ops", "--scope", "admin")
    return deployment, key_file, upstream, admin


async def test_online_key_rotation_under_load_fails_no_call(tmp_path: Path, aiohttp_server: Any) -> None:
    """Prepend a key + reload, rotate, drop the old key + reload, at 50 calls/s: 0 errors, 0 wrong secrets."""
    k1, k2 = generate_key("k1"), generate_key("k2")
    deployment, key_file, upstream, admin = await rotation_setup(tmp_path, aiohttp_server, k1)
    async with start_gateway(deployment, tmp_path) as gateway:
        await add_credentials(gateway, admin, upstream)
        async with loaded(Load(gateway, admin, upstream)) as load:
            await poll("load running", lambda: len(load.statuses) >= 20, deadline=30)
            key_file.write_text(f"{k2}\n{k1}\n", encoding="utf-8")
            await reloaded(gateway, deployment, "reloaded", 1)
            upstream.state.valid_token = "token-rotated"  # the next OAuth2 call gets a 401 and refreshes
            await poll("an OAuth2 refresh after the reload", lambda: upstream.state.refreshes == 1, deadline=60)
            sealed = lambda: sealed_key_ids(tmp_path, "cred-oauth") == {"k2"}  # noqa: E731
            await poll("the refreshed token sealed with k2", sealed, deadline=30)
            assert sealed_key_ids(tmp_path, "cred-bearer") == {"k1"}

            async def rotated() -> bool:  # refused until the replica's heartbeat shows k2 (<= 5 s)
                return (await run_cli(deployment, "keys", "rotate"))[0] == 0

            await poll("keys rotate accepted", rotated, deadline=30)
            code, err = await run_cli(deployment, "reload")  # through server.pid_file this time
            assert code == 0, err
            twice = lambda: gateway.output().count('"event":"reloaded"') >= 2  # noqa: E731
            await poll("reload via the pid file", twice, deadline=30)
            assert sealed_key_ids(tmp_path) == {"k2"}
            key_file.write_text(f"{k2}\n", encoding="utf-8")
            await reloaded(gateway, deployment, "reloaded", 3)
            settled = len(load.statuses)
            await poll("calls after the last reload", lambda: len(load.statuses) >= settled + 30, deadline=30)
    assert len(load.statuses) >= 100
    assert set(load.statuses) == {200}, [s for s in load.statuses if s != 200]
    assert load.wrong_secrets == 0


async def test_keys_change_and_workers_restart_under_load_without_a_failed_call(
    tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """Two workers on PostgreSQL and Redis, 50 calls/s over bearer, basic and OAuth2: prepend a key +
    reload, an OAuth2 refresh, rotate, ``gateway restart`` (both workers replaced), drop the old key +
    reload (accepted only once nothing is sealed with it): 0 failed calls, 0 wrong secrets upstream."""
    async with drill(tmp_path, store_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix) as rounds:
        await rounds.round()
    load = rounds.load
    assert logged(rounds.gateway, "worker_replaced") == 2
    assert rounds.during_restarts(), "calls were made while the workers were replaced"
    assert len(load.calls) >= 200
    assert load.failed() == []
    assert load.wrong_secrets == 0


async def test_a_reload_refuses_what_would_break_and_applies_new_objects(tmp_path: Path, aiohttp_server: Any) -> None:
    """Broken TOML, or dropping a key still in use: refused, nothing changes; a new credential: usable."""
    k1 = generate_key("k1")
    deployment, key_file = keyed_deployment(tmp_path, [k1])
    upstream = await start_upstream(aiohttp_server)
    admin = await deployment.cli("tokens", "create", "--name", "ops", "--scope", "admin")
    headers = {"Authorization": f"Bearer {admin}"}
    async with start_gateway(deployment, tmp_path) as gateway, aiohttp.ClientSession(headers=headers) as session:
        await add_credentials(gateway, admin, upstream)
        good = deployment.config.read_text(encoding="utf-8")

        deployment.config.write_text(good + "[server\n", encoding="utf-8")
        code, err = await run_cli(deployment, "reload")  # the CLI reads the config too: it says so at once
        assert code == 2 and "not valid TOML" in err
        await reloaded(gateway, deployment, "reload_refused", 1)
        key_file.write_text(generate_key("k9") + "\n", encoding="utf-8")
        deployment.config.write_text(good, encoding="utf-8")
        await reloaded(gateway, deployment, "reload_refused", 2)
        refusal = [line for line in gateway.output().splitlines() if "reload_refused" in line][-1]
        assert "'k1'" in refusal and "keys rotate" in refusal
        async with session.get(f"{gateway.url}/v1/proxy/credential/cred-bearer/echo/x") as resp:
            assert resp.status == 200  # k1 is still in force

        key_file.write_text(k1 + "\n", encoding="utf-8")
        declared = {"id": "cred-declared", "provider": "rest", "base_url": upstream.url,
                    "auth": {"type": "bearer", "token": "declared-secret"}}  # fmt: skip
        sections = {
            "store": {"url": f"sqlite:///{tmp_path / 'gateway.db'}"},
            "encryption": {"keys_file": str(key_file)},
            "server": {"pid_file": str(tmp_path / "gateway.pid")},
            "log": {"format": "json", "level": "info"},
            "credentials": [declared],
        }
        write_config(deployment.config, sections)
        await reloaded(gateway, deployment, "reloaded", 1)
        async with session.get(f"{gateway.url}/v1/proxy/credential/cred-declared/echo/y") as resp:
            assert resp.status == 200
            assert (await resp.json())["headers"]["authorization"] == ["Bearer declared-secret"]
    assert "declared-secret" not in gateway.output()


async def test_rotate_waits_for_every_replica_and_a_forced_one_is_reread(tmp_path: Path, aiohttp_server: Any) -> None:
    """A replica not reloaded yet blocks ``keys rotate`` (exit 1, named); after --force it re-reads its key file."""
    k1, k2 = generate_key("k1"), generate_key("k2")
    deployment, key_file, upstream, admin = await rotation_setup(tmp_path, aiohttp_server, k1)
    async with start_gateway(deployment, tmp_path) as gateway:
        await add_credentials(gateway, admin, upstream)
        key_file.write_text(f"{k2}\n{k1}\n", encoding="utf-8")  # on disk, but the replica was not reloaded

        async def refused() -> bool:  # the replica's first heartbeat may still be on its way
            code, err = await run_cli(deployment, "keys", "rotate")
            return code == 1 and "k2" in err and "reload" in err

        await poll("keys rotate refused naming the replica", refused, deadline=30)
        code, err = await run_cli(deployment, "keys", "rotate", "--force")
        assert code == 0, err
        assert sealed_key_ids(tmp_path) == {"k2"}
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as session:

            async def reread() -> bool:
                """Calls stay served; once the credential cache lapses (1 s) a call opens the k2 secret,
                the replica re-reads its key file, and its heartbeat then lets a plain rotate pass."""
                async with session.get(f"{gateway.url}/v1/proxy/credential/cred-bearer/echo/z") as resp:
                    assert resp.status == 200, await resp.text()
                    assert (await resp.json())["headers"]["authorization"] == ["Bearer upstream-bearer"]
                return (await run_cli(deployment, "keys", "rotate"))[0] == 0

            await poll("the replica holding k2 after meeting it", reread, deadline=30)
    assert "encryption_key_missing" not in gateway.output()


async def test_a_hand_over_between_two_processes_fails_no_call(tmp_path: Path, aiohttp_server: Any) -> None:
    """``server.reuse_port``: a new process shares the API port (its probes on a port of its own); once it
    is ready the old one drains; 0 failed calls."""
    deployment, _ = keyed_deployment(tmp_path, [generate_key("k1")], server={"reuse_port": True})
    upstream = await start_upstream(aiohttp_server)
    admin = await deployment.cli("tokens", "create", "--name", "ops", "--scope", "admin")
    async with contextlib.AsyncExitStack() as stack, start_gateway(deployment, tmp_path, name="old") as old:
        await add_credentials(old, admin, upstream)
        load = Load(old, admin, upstream)
        async with loaded(load):  # stopped before the new process is: every call had a listener
            await poll("load on the old process", lambda: len(load.statuses) >= 20, deadline=30)
            new = await stack.enter_async_context(
                start_gateway(deployment, tmp_path, name="new", ports=(old.port, free_port()))
            )
            old.proc.terminate()
            assert await old.wait_exit(30) == 0
            settled = len(load.statuses)
            await poll("calls served by the new process alone", lambda: len(load.statuses) >= settled + 30, deadline=30)
        assert '"event":"request"' in new.output()
    assert set(load.statuses) == {200}, [s for s in load.statuses if s != 200]


def test_a_reload_names_what_it_applied_and_what_needs_a_restart() -> None:
    """Keys read once at start (the egress policy, the console, mutations) are never reported as applied."""
    old = load_config(None, environ={"GATEWAY_ENCRYPTION_KEYS": "k1:AAAA"})
    changes = {
        "GATEWAY_ENCRYPTION_KEYS": "k2:BBBB,k1:AAAA",
        "GATEWAY_LOG__LEVEL": "debug",
        "GATEWAY_PROVIDERS__HUBSPOT__RATE_LIMIT__RATE": "50",
        "GATEWAY_SERVER__PORT": "9999",
        "GATEWAY_UPSTREAM__DENY": '["10.0.0.0/8"]',
        "GATEWAY_CONSOLE__SESSION_TTL": "600",
        "GATEWAY_MUTATIONS__RECOVERY_LEASE": "20",
    }
    applied, restart = changed_keys(old, load_config(None, environ=changes))
    assert sorted(applied) == ["encryption.keys", "log.level", "providers.hubspot"]
    assert sorted(restart) == ["console.session_ttl", "mutations.recovery_lease", "server.port", "upstream.deny"]
    assert changed_keys(old, old) == ([], [])


ACME = """
[providers.acme]
display_name = "Acme"
base_url = "https://api.acme.example"
auth = ["bearer"]
rate_limit = { rate = 5, per = 1 }
"""


async def test_a_provider_added_by_a_reload_is_in_the_api_at_once(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    """The catalog the API lists and checks credentials against is the reloaded one, as the pacer's is; a file that
    serve would refuse (an egress rule that does not parse) is refused."""
    gw = await make_gateway()
    started = gw.app[appkeys.CONFIG]
    path = tmp_path / "gateway.toml"
    keys = started.encryption.key_text()
    path.write_text(f'[store]\nurl = "{started.store.url}"\n[encryption]\nkeys = "{keys}"\n{ACME}')
    assert (await gw.client.get("/v1/providers/acme", headers=gw.auth())).status == 404
    assert await Reloader(gw.app, str(path), started).reload()
    listed = await gw.client.get("/v1/providers/acme", headers=gw.auth())
    assert listed.status == 200 and (await listed.json())["display_name"] == "Acme"
    credential = {"provider": "acme", "base_url": "https://api.acme.example", "auth": {"type": "bearer", "token": "t"}}
    created = await gw.client.post("/v1/credentials", json=credential, headers=gw.auth())
    assert created.status == 201, await created.text()
    await sign_in(gw.client, gw.admin_token)
    assert "Acme" in await (await gw.client.get("/console/providers")).text()  # the console shows the same catalog

    path.write_text(path.read_text() + '[upstream]\ndeny = ["10.0.0.0/33"]\n')  # serve would refuse to start
    assert not await Reloader(gw.app, str(path), started).reload()
