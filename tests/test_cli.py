"""The CLI, run as a real process: exit codes, scriptable output, every verb."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from gateway.cli import build_parser
from gateway.vault.crypto import generate_key
from tests.conftest import PG_ADMIN_DSN


def gateway(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, env=env, input=stdin, timeout=60
    )


@pytest.fixture
def env(store_url: str) -> dict[str, str]:
    """For verbs that use the store: the test runs on SQLite and on PostgreSQL."""
    return _env(store_url)


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    """For verbs that stop before the store, or tests that name their own: once is enough."""
    return _env(f"sqlite:///{tmp_path / 'gateway.db'}")


def _env(store_url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {
        **base,
        "GATEWAY_STORE__URL": store_url,
        "GATEWAY_STORE__AUTO_MIGRATE": "true",
        "GATEWAY_ENCRYPTION_KEYS": generate_key("k1"),
        "GATEWAY_SERVER__PORT": "0",  # never the default ports: `gateway serve --demo` may hold them
        "GATEWAY_METRICS__PORT": "0",
        "GATEWAY_LOG__FORMAT": "json",
    }


def test_keys_generate_prints_only_the_key(sqlite_env: dict[str, str]) -> None:
    """`KEY=$(gateway keys generate)` works: the key alone on stdout, notes on stderr."""
    result = gateway("keys", "generate", "--id", "k2", env=sqlite_env)
    assert result.returncode == 0
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("k2:")
    assert result.stderr


def test_tokens_create_list_revoke(env: dict[str, str]) -> None:
    """A token is printed once, listed without its value, and revoked by name."""
    only = ("--only", "sync:s1,credential:s2")
    created = gateway("tokens", "create", "--name", "ci", "--scope", "proxy,mutations", *only, env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("gw_") and len(token) > 40
    listed = gateway("tokens", "list", "--json", env=env)
    rows = json.loads(listed.stdout)
    assert rows[0]["name"] == "ci" and rows[0]["scopes"] == ["proxy", "mutations"]
    assert rows[0]["only"] == ["sync:s1", "credential:s2"]
    assert token not in listed.stdout
    assert gateway("tokens", "revoke", "ci", env=env).returncode == 0
    assert gateway("tokens", "revoke", "ci", env=env).returncode == 2


def test_tokens_create_takes_priority_weight_and_expiry(env: dict[str, str]) -> None:
    """--priority, --weight and --expires DAYS are stored and listed; bad values exit 2 naming the field."""
    made = gateway(
        "tokens",
        "create",
        "--name",
        "bulk",
        "--scope",
        "proxy",
        "--priority",
        "low",
        "--weight",
        "5",
        "--expires",
        "2",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    row = json.loads(gateway("tokens", "list", "--json", env=env).stdout)[0]
    assert (row["priority"], row["weight"]) == ("low", 5)
    expires = datetime.fromisoformat(row["expires_at"]) - datetime.now(UTC)
    assert timedelta(days=1, hours=23) < expires <= timedelta(days=2)
    for flag, value, field in [
        ("--weight", "0", "weight"),
        ("--priority", "urgent", "priority"),
        ("--expires", "-1", "--expires"),
        ("--expires", "1e7", "--expires"),  # past the year 9999: a traceback before
    ]:
        bad = gateway("tokens", "create", "--name", "x", "--scope", "proxy", flag, value, env=env)
        assert bad.returncode == 2 and field in bad.stderr, bad.stderr


@pytest.mark.parametrize("only", ["billing", "sync:ok,secret:billing"])
def test_untyped_only_ids_are_refused_in_one_line(env: dict[str, str], only: str) -> None:
    """A plain or unknown-kind --only entry exits 2 with one line naming the field, and stores no token."""
    result = gateway("tokens", "create", "--name", "x", "--scope", "proxy", "--only", only, env=env)
    assert result.returncode == 2 and result.stdout == ""
    said = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # JSON lines are logs
    assert len(said) == 1 and said[0].startswith("gateway: invalid token: only.") and "<kind>:<id>" in said[0], said
    assert json.loads(gateway("tokens", "list", "--json", env=env).stdout) == []


@pytest.mark.parametrize("only", ["", " , "])
def test_an_empty_only_is_refused_not_read_as_all_objects(env: dict[str, str], only: str) -> None:
    """``--only "$IDS"`` with an empty variable must not create a token open to every object."""
    result = gateway("tokens", "create", "--name", "x", "--scope", "proxy", "--only", only, env=env)
    assert result.returncode == 2 and result.stdout == ""
    said = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # JSON lines are logs
    assert len(said) == 1 and said[0].startswith("gateway: --only:"), said
    assert json.loads(gateway("tokens", "list", "--json", env=env).stdout) == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["tokens", "revoke", os.fsdecode(b"\xff")], "gateway: arguments must be valid UTF-8"),
        (["credentials", "remove", os.fsdecode(b"a\xfeb")], "gateway: arguments must be valid UTF-8"),
        (["sandbox", "run", "stripe", "--port", "99999"], "argument --port: must be a port number"),
        (["sandbox", "run", "stripe", "--port", "-1"], "argument --port: must be a port number"),
    ],
)
def test_bad_arguments_exit_2_without_a_traceback(args: list[str], said: str) -> None:
    """Bytes that are not UTF-8 and an impossible port are usage errors, never a traceback."""
    result = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("stdin", "said"),
    [
        ("[" * 100_000, "nests deeper than 64 levels"),  # was a RecursionError traceback
        (
            '{"id": "c", "provider": "stripe", "base_url": "https://a", "auth": {"type": "bearer", "token": "\\ud800"}'
            "}",
            "lone UTF-16 surrogate",
        ),  # was stored as the credential's secret
        ('{"id": "c", "rate_limit": {"rate": NaN}}', "NaN is not a JSON number"),
        ('{"id": "c", "auth": {"type": "basic", "type": "bearer"}}', "auth.type: the key appears twice"),
    ],
)
def test_add_reads_the_file_as_strictly_as_the_api_reads_a_body(env: dict[str, str], stdin: str, said: str) -> None:
    result = gateway("credentials", "add", "--file", "-", env=env, stdin=stdin)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("gateway: --file: not valid JSON: ") and said in result.stderr
    assert json.loads(gateway("credentials", "list", "--json", env=env).stdout) == []


def test_bad_scope_is_usage_error(env: dict[str, str]) -> None:
    """An unknown scope exits 2 naming the scope."""
    result = gateway("tokens", "create", "--name", "x", "--scope", "root", env=env)
    assert result.returncode == 2 and "root" in result.stderr


def test_credentials_add_list_remove(env: dict[str, str], tmp_path: Path) -> None:
    """credentials add takes the Management API body; list masks secrets; remove deletes."""
    body = {
        "id": "c1",
        "provider": "rest",
        "base_url": "https://api.example.test",
        "auth": {"type": "header", "name": "X-API-Key", "value": "s3cr3t-value"},
    }
    added = gateway("credentials", "add", "--file", "-", env=env, stdin=json.dumps(body))
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "c1"
    listed = gateway("credentials", "list", "--json", env=env)
    assert json.loads(listed.stdout)[0]["auth"] == {
        "type": "header",
        "name": "X-API-Key",
        "value": "***",
        "prefix": None,
    }
    assert "s3cr3t-value" not in listed.stdout + listed.stderr
    bad = gateway("credentials", "add", "--file", "-", env=env, stdin='{"provider": "x"}')
    assert bad.returncode == 2 and "provider" in bad.stderr
    assert gateway("credentials", "remove", "c1", env=env).returncode == 0


def test_keys_rotate_reencrypts_and_is_safe_to_rerun(env: dict[str, str]) -> None:
    """After prepending a new key, rotate re-seals every secret; a second run changes nothing; the old key
    can then be dropped."""
    body = {
        "id": "c1",
        "provider": "rest",
        "base_url": "https://api.example.test",
        "auth": {"type": "bearer", "token": "tok-123456"},
    }
    assert gateway("credentials", "add", "--file", "-", env=env, stdin=json.dumps(body)).returncode == 0
    old = env["GATEWAY_ENCRYPTION_KEYS"]
    rotated_env = {**env, "GATEWAY_ENCRYPTION_KEYS": generate_key("k2") + "," + old}
    first = gateway("keys", "rotate", env=rotated_env)
    assert first.returncode == 0 and "re-encrypted 1" in first.stderr
    assert "re-encrypted 0" in gateway("keys", "rotate", env=rotated_env).stderr
    only_new = {**env, "GATEWAY_ENCRYPTION_KEYS": rotated_env["GATEWAY_ENCRYPTION_KEYS"].split(",")[0]}
    assert gateway("credentials", "list", env=only_new).returncode == 0
    gone = gateway("credentials", "list", env={**env, "GATEWAY_ENCRYPTION_KEYS": generate_key("k9")})
    assert gone.returncode == 1 and "'k2'" in gone.stderr


def test_check_config_masks_and_validates(env: dict[str, str], tmp_path: Path) -> None:
    """check-config prints the effective config with secrets masked; a bad key exits 2 naming it."""
    result = gateway("check-config", env=env)
    assert result.returncode == 0
    assert env["GATEWAY_ENCRYPTION_KEYS"].split(":")[1] not in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[pacing]\nbackend = "nope"\n')
    result = gateway("check-config", "--config", str(bad), env=env)
    assert result.returncode == 2 and "pacing.backend" in result.stderr


def test_check_config_refuses_a_sync_whose_credential_does_not_exist(env: dict[str, str], tmp_path: Path) -> None:
    """What `serve` would refuse at start, `check-config` refuses first: exit 2 naming the key."""
    path = tmp_path / "g.toml"
    path.write_text('[[syncs]]\nid = "my-sync-id"\ncredential_id = "credential-missing"\n')
    result = gateway("check-config", "--config", str(path), env=env)
    assert result.returncode == 2 and "syncs[0].credential_id: credential 'credential-missing'" in result.stderr


def test_serve_refuses_to_start_without_a_key(sqlite_env: dict[str, str]) -> None:
    """With no encryption key, serve exits 2 and says how to make one, with the documented variable."""
    result = gateway("serve", env={k: v for k, v in sqlite_env.items() if k != "GATEWAY_ENCRYPTION_KEYS"})
    assert result.returncode == 2 and "export GATEWAY_ENCRYPTION_KEYS=$(gateway keys generate)" in result.stderr


def test_migrate_then_unmigrated_store_refusal(tmp_path: Path, sqlite_env: dict[str, str]) -> None:
    """Without auto_migrate an empty store is refused with a hint; `gateway migrate` fixes it."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh = {**sqlite_env, "GATEWAY_STORE__URL": url, "GATEWAY_STORE__AUTO_MIGRATE": "false"}
    refused = gateway("tokens", "list", env=fresh)
    assert refused.returncode != 0 and "gateway migrate" in refused.stderr
    refused = gateway("serve", env=fresh)
    assert refused.returncode == 1 and "gateway migrate" in refused.stderr
    assert gateway("migrate", env=fresh).returncode == 0
    assert gateway("tokens", "list", env=fresh).returncode == 0


def test_every_verb_has_help() -> None:
    """--help works on every verb and sub-verb."""
    env = dict(os.environ)
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["check-config", "--help"],
        ["migrate", "--help"],
        ["tokens", "create", "--help"],
        ["tokens", "list", "--help"],
        ["credentials", "add", "--help"],
        ["keys", "rotate", "--help"],
    ):
        assert gateway(*args, env=env).returncode == 0, args


def _actions(parser: argparse.ArgumentParser, path: str = "gateway") -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _actions(sub, f"{path} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            found.append((path, action))
    return found


def test_every_option_and_argument_has_help() -> None:
    """`gateway <verb> --help` explains every flag and argument (--name, --json, ... included)."""
    bare = [f"{path} {action.dest}" for path, action in _actions(build_parser()) if not action.help]
    assert bare == []


def test_syncs_and_consumers_have_the_credentials_verbs(env: dict[str, str]) -> None:
    """`syncs` and `consumers` take list/add/remove exactly as `credentials` does."""
    credential = {
        "id": "c1",
        "provider": "stripe",
        "base_url": "https://api.stripe.com",
        "auth": {"type": "bearer", "token": "sk_test_x"},
    }
    assert gateway("credentials", "add", "--file", "-", env=env, stdin=json.dumps(credential)).returncode == 0
    sync = gateway("syncs", "add", "--file", "-", env=env, stdin=json.dumps({"id": "s1", "credential_id": "c1"}))
    assert sync.returncode == 0 and sync.stdout.strip() == "s1", sync.stderr
    hook = {"id": "h1", "kind": "webhook", "url": "https://example.com/hook", "secret": "whsec_" + "A" * 24}
    consumer = gateway("consumers", "add", "--file", "-", env=env, stdin=json.dumps(hook))
    assert consumer.returncode == 0 and consumer.stdout.strip() == "h1", consumer.stderr
    assert json.loads(gateway("syncs", "list", "--json", env=env).stdout)[0]["collections"] == []
    listed = gateway("consumers", "list", "--json", env=env).stdout
    assert json.loads(listed)[0]["kind"] == "webhook" and "AAAAAAAA" not in listed
    bad = gateway("syncs", "add", "--file", "-", env=env, stdin=json.dumps({"id": "s2"}))
    assert bad.returncode == 2 and "credential_id" in bad.stderr
    assert gateway("syncs", "remove", "s1", env=env).returncode == 0
    assert gateway("consumers", "remove", "h1", env=env).returncode == 0
    assert json.loads(gateway("consumers", "list", "--json", env=env).stdout) == []


def test_the_cli_is_quiet_about_alembic_unless_verbose(sqlite_env: dict[str, str], tmp_path: Path) -> None:
    """Migration steps are library detail: `migrate` says one line; `--verbose` shows Alembic's steps."""
    quiet = gateway("migrate", env={**sqlite_env, "GATEWAY_STORE__URL": f"sqlite:///{tmp_path / 'a.db'}"})
    assert quiet.returncode == 0 and "alembic" not in quiet.stderr
    assert quiet.stderr.strip() == "store schema is up to date"
    loud = gateway("migrate", "--verbose", env={**sqlite_env, "GATEWAY_STORE__URL": f"sqlite:///{tmp_path / 'b.db'}"})
    assert loud.returncode == 0 and "Running upgrade" in loud.stderr


@pytest.mark.parametrize("verb", [["migrate"], ["tokens", "list"], ["serve"]])
def test_a_missing_database_is_one_line_naming_store_url_and_createdb(verb: list[str]) -> None:
    """A PostgreSQL server without the configured database: one line, password masked, the fix named."""
    missing = f"gw_missing_{uuid.uuid4().hex[:8]}"
    server = make_url(PG_ADMIN_DSN).set(password="hunter2secret", database=missing)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "GATEWAY_STORE__URL": server.render_as_string(hide_password=False),
        "GATEWAY_STORE__AUTO_MIGRATE": "true",
        "GATEWAY_ENCRYPTION_KEYS": generate_key("k1"),
        "GATEWAY_SERVER__PORT": "0",
        "GATEWAY_METRICS__PORT": "0",
        "GATEWAY_LOG__FORMAT": "json",
    }
    result = gateway(*verb, env=env)
    assert result.returncode == 1, result.stderr
    said = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # JSON lines are logs
    assert said == [
        f"gateway: store.url {server.render_as_string(hide_password=True)}: "
        f'database "{missing}" does not exist; create it: createdb -h {server.host} -p {server.port} '
        f"-U {server.username} {missing} (then `gateway migrate`)"
    ]
    assert "hunter2secret" not in result.stderr + result.stdout


@pytest.mark.parametrize("verb", ["reload", "restart"])
def test_reload_and_restart_signal_only_a_gateway(verb: str, tmp_path: Path) -> None:
    """A pid that is not ``gateway serve`` (here a sleeping python with ``serve`` in its argv), given by
    --pid or by a stale pid file, exits 2 and is not signalled: ``restart --pid $$`` used to kill a shell."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "serve"])
    try:
        pid_file = tmp_path / "gateway.pid"
        pid_file.write_text(f"{other.pid}\n", encoding="utf-8")
        base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env = {**base, "GATEWAY_SERVER__PID_FILE": str(pid_file), "GATEWAY_ENCRYPTION_KEYS": generate_key("k1")}
        for how in (["--pid", str(other.pid)], []):
            result = gateway(verb, *how, env=env)
            assert result.returncode == 2, result.stderr
            assert result.stderr.strip().splitlines() == [f"gateway: no gateway runs with pid {other.pid}"]
    finally:
        other.terminate()  # SIGTERM (15): a pending SIGHUP (1) or SIGUSR2 (12) would be delivered first
        other.wait(timeout=60)
    assert other.returncode == -15
