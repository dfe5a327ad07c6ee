"""The ``gateway`` command: argument parsing and the verbs; the work is done elsewhere.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid config (the message names the key).
Verbs that mint a secret (``tokens create``, ``keys generate``) print it alone on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, TypeAdapter

from gateway import __version__, jsontext
from gateway.config import KEYS_ENV, Config, load_config, masked_config
from gateway.domain.models import ConsumerIn, CredentialIn, SyncIn, TokenIn
from gateway.domain.objects import parse_scopes
from gateway.errors import ConfigError, GatewayError, validate

if TYPE_CHECKING:
    from gateway.store.objects import Objects

# The subsystems (store, server, sandboxes, ...) are imported by the verbs that use them: importing all of
# them takes about a second, which every `gateway tokens list` in a script would pay.

T = TypeVar("T")

# The Management API's resources, verb for verb: plural -> (singular, create body, list columns).
OBJECT_VERBS: dict[str, tuple[str, Any, tuple[str, ...]]] = {
    "credentials": ("credential", CredentialIn, ("id", "provider", "base_url")),
    "syncs": ("sync", SyncIn, ("id", "credential_id", "collections")),
    "consumers": ("consumer", ConsumerIn, ("id", "kind", "sync_id", "collections")),
}


class _SandboxProviders:
    """``sandbox run``'s choices, read from the sandbox package only when argparse checks or lists them."""

    def __iter__(self) -> Iterator[str]:
        from gateway.sandbox.standalone import PROVIDERS

        return iter(PROVIDERS)

    def __contains__(self, value: object) -> bool:
        return value in tuple(self)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="API gateway that holds credentials and paces calls")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    common = argparse.ArgumentParser(add_help=False)  # the options every verb takes
    common.add_argument("--config", help="TOML config file (default: $GATEWAY_CONFIG, else built-in defaults)")
    common.add_argument("--verbose", action="store_true", help="also log library details (schema migrations)")

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=help, description=help, parents=[common])

    serve_p = verb("serve", "run the gateway")
    serve_p.add_argument(
        "--demo",
        action="store_true",
        help="also start sandbox upstreams on loopback and seed demo objects (ephemeral key and store)",
    )
    verb("check-config", "validate the config and print the effective config with secrets masked")
    verb("migrate", "create or upgrade the store's schema")

    tokens = verbs.add_parser("tokens", help="manage API tokens").add_subparsers(dest="action", required=True)
    create = tokens.add_parser("create", parents=[common], help="create a token and print it once")
    create.add_argument("--name", required=True, help="the token's unique name (how list and revoke refer to it)")
    create.add_argument("--scope", required=True, help="comma-separated: proxy,mutations,consumers,admin")
    create.add_argument(
        "--only", help="comma-separated ids the token is limited to: sync:<id>, credential:<id>, consumer:<id>"
    )
    create.add_argument("--priority", default="normal", help="pacing class: high, normal (default) or low")
    create.add_argument("--weight", type=int, default=1, help="fair share within its priority, 1..1000 (default 1)")
    create.add_argument("--expires", type=float, metavar="DAYS", help="the token stops working after DAYS days")
    tokens_list = tokens.add_parser("list", parents=[common], help="list tokens (never their values)")
    tokens_list.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    revoke = tokens.add_parser("revoke", parents=[common], help="revoke a token by name")
    revoke.add_argument("name", help="the token's name")

    for plural, (singular, _, _) in OBJECT_VERBS.items():
        group = verbs.add_parser(plural, help=f"manage {plural}").add_subparsers(dest="action", required=True)
        listing = group.add_parser("list", parents=[common], help=f"list {plural} (secrets masked)")
        listing.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
        add = group.add_parser(
            "add", parents=[common], help=f"add a {singular} from a JSON body as the Management API takes it"
        )
        add.add_argument("--file", required=True, help=f"JSON file with the {singular}, or - for stdin")
        remove = group.add_parser("remove", parents=[common], help=f"remove a {singular}")
        remove.add_argument("id", help=f"the {singular}'s id")

    sandbox = verbs.add_parser("sandbox", help="sandbox upstreams").add_subparsers(dest="action", required=True)
    run = sandbox.add_parser("run", parents=[common], help="serve one provider's sandbox on loopback (offline trials)")
    run.add_argument(  # an explicit metavar: argparse would list the choices (import the sandboxes) for every verb
        "provider", choices=_SandboxProviders(), metavar="PROVIDER", help="the sandbox's provider: %(choices)s"
    )
    run.add_argument("--port", type=_port, default=0, help="port to listen on (default: a free one, printed)")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--seed", action="store_true", help="start with a few demo records")

    signals = (("reload", "re-read the config (SIGHUP)"), ("restart", "start new workers, drain the old (SIGUSR2)"))
    for name, what in signals:
        signalled = verb(name, f"ask the running gateway to {what}")
        signalled.add_argument("--pid", type=int, help="the gateway's pid (default: read server.pid_file)")

    keys = verbs.add_parser("keys", help="encryption keys").add_subparsers(dest="action", required=True)
    generate = keys.add_parser("generate", parents=[common], help="print a new key-id:base64 key")
    generate.add_argument("--id", default=None, help="key id (default: k<unix time>)")
    rotate = keys.add_parser("rotate", parents=[common], help="re-encrypt every stored secret with the newest key")
    rotate.add_argument(
        "--force", action="store_true", help="rotate even if a live replica does not hold the newest key yet"
    )

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if not all(_is_utf8(arg) for arg in (sys.argv[1:] if argv is None else argv)):
        stderr("gateway: arguments must be valid UTF-8 (ids, names and paths are text)")
        return 2
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        stderr(f"gateway: {exc.message}")
        return 2
    except GatewayError as exc:
        stderr(f"gateway: {exc.message}")
        return 2 if exc.status in (400, 404, 409) else 1
    except OSError as exc:  # e.g. the port is taken
        stderr(f"gateway: {exc.strerror or exc}")
        return 1
    except KeyboardInterrupt:
        return 130


def _is_utf8(arg: str) -> bool:
    """Whether an argument decoded from UTF-8 (Python keeps undecodable bytes as lone surrogates)."""
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _port(text: str) -> int:
    """``--port``: a TCP port number, 0 for a free one."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, not {text[:20]!r}")
    return port


def _dispatch(args: argparse.Namespace) -> int:
    if args.verb in ("reload", "restart"):  # with --pid, a broken config is the running gateway's to refuse
        from gateway.runtime import signal_gateway

        pid_file = None if args.pid is not None else load_config(args.config).server.pid_file
        return signal_gateway(pid_file, args.pid, "SIGHUP" if args.verb == "reload" else "SIGUSR2")
    if args.verb == "keys" and args.action == "generate":
        import time

        from gateway.vault.crypto import generate_key

        print(generate_key(args.id or f"k{int(time.time())}"))
        stderr(f"put it first in {KEYS_ENV} (encryption.keys), comma-separated, then run `gateway keys rotate`")
        return 0
    from gateway.observability.logs import configure_logging

    if args.verb == "sandbox":  # needs no config, store or key
        from gateway.sandbox.standalone import run_one

        configure_logging(format="console", level="warning")
        run_async(lambda: run_one(args.provider, host=args.host, port=args.port, seed=args.seed))
        return 0
    from gateway.pacing.limits import check_config as check_limits
    from gateway.runtime import keyring_for

    config = load_config(args.config)
    check_limits(config)
    configure_logging(format=config.log.format, level=config.log.level)
    if not args.verbose:  # Alembic narrates every migration step at INFO: noise unless asked for
        logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.verb == "check-config":
        from gateway.preflight import preflight

        keyring = keyring_for(config)
        run_async(lambda: preflight(config, keyring))
        print(json.dumps(masked_config(config), indent=2))
        return 0
    if args.verb == "serve":
        if args.demo:
            from gateway.sandbox.demo import demo_config

            if config.server.workers > 1:
                raise ConfigError("server.workers: the demo runs in one process (its sandboxes and throwaway store)")
            config, keyring = demo_config(config)
        else:
            keyring = keyring_for(config)
        if config.server.workers > 1:
            from gateway.server import serve_worker
            from gateway.supervisor import supervise

            return supervise(config, keyring, worker=serve_worker, config_path=args.config)
        from gateway.server import serve

        return serve(config, keyring, demo=args.demo, config_path=args.config)
    if args.verb == "migrate":
        from gateway.runtime import run_migrations

        run_async(lambda: run_migrations(config))
        stderr("store schema is up to date")
        return 0
    return run_async(lambda: _store_verb(args, config))


async def _store_verb(args: argparse.Namespace, config: Config) -> int:
    from gateway.runtime import check_replicas_hold, keyring_for, store_session

    keyring = keyring_for(config, allow_empty=args.verb == "tokens")
    async with store_session(config, keyring) as (objects, tokens):
        match (args.verb, args.action):
            case ("tokens", "create"):
                print(await tokens.create(_token_spec(args)))
                stderr("store this token now: it is not shown again")
            case ("tokens", "list"):
                columns = ("name", "scopes", "only", "priority", "weight", "expires_at", "last_used_at")
                _print_list(await tokens.list(), as_json=args.json, columns=columns)
            case ("tokens", "revoke"):
                await tokens.revoke(args.name)
                stderr(f"revoked {args.name}")
            case (noun, _) if noun in OBJECT_VERBS:
                await _object_verb(config, objects, noun, args)
            case ("keys", "rotate"):
                await check_replicas_hold(objects.engine, keyring.newest_id, force=args.force)
                count = await objects.rotate_keys()
                stderr(f"re-encrypted {count} secret(s) with key {keyring.newest_id!r}")
    return 0


async def _object_verb(config: Config, objects: Objects, plural: str, args: argparse.Namespace) -> None:
    """``list``, ``add`` and ``remove`` of credentials, syncs or consumers, through the API's own models."""
    singular, body_type, columns = OBJECT_VERBS[plural]
    if args.action == "list":
        _print_list(await getattr(objects, f"list_{plural}")(), as_json=args.json, columns=columns)
    elif args.action == "add":
        try:
            raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()  # noqa: ASYNC240
        except OSError as exc:
            raise ConfigError(f"--file: cannot read {args.file}: {exc.strerror or exc}") from None
        try:  # as strictly as the API reads a body: bounded nesting, finite numbers, no lone surrogates, no key twice
            data = jsontext.loads(raw, max_depth=config.server.max_json_depth, unique_keys=True)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--file: not valid JSON: {exc}") from None
        from gateway.pacing.limits import check_credential

        if plural == "credentials" and isinstance(data, dict) and isinstance(data.get("provider"), str):
            check_credential(config, data["provider"], None)  # name the unknown provider before missing fields
        body = validate(TypeAdapter[Any](body_type), data, what=singular)
        if plural == "credentials":
            check_credential(config, body.provider, body.rate_limit)
        print((await getattr(objects, f"create_{singular}")(body)).id)
    else:
        await getattr(objects, f"delete_{singular}")(args.id)
        stderr(f"removed {args.id}")


def _token_spec(args: argparse.Namespace) -> TokenIn:
    """``tokens create``'s flags as the API's body, validated by the same model (errors name the flag's field)."""
    from gateway.store.db import utcnow

    try:
        expires_at = utcnow() + timedelta(days=args.expires) if args.expires is not None else None
    except (OverflowError, ValueError):  # inf, nan, or past the year 9999
        expires_at = None
    if args.expires is not None and (expires_at is None or not args.expires > 0):
        raise ConfigError("--expires: must be a positive number of days, before the year 9999")
    only = [i.strip() for i in args.only.split(",") if i.strip()] if args.only is not None else None
    if only == []:  # an empty --only "$IDS" must not silently make a token limited to nothing into one for all
        raise ConfigError("--only: names no <kind>:<id>; leave --only out for a token not limited to objects")
    data = {
        "name": args.name,
        "scopes": parse_scopes(args.scope),
        "only": only,
        "priority": args.priority,
        "weight": args.weight,
        "expires_at": expires_at,
    }
    return validate(TokenIn, data, what="token")  # type: ignore[no-any-return]


def _print_list(items: Sequence[BaseModel], *, as_json: bool, columns: tuple[str, ...]) -> None:
    rows: list[dict[str, Any]] = [TypeAdapter(type(i)).dump_python(i, mode="json") for i in items]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print("\t".join(_cell(row.get(c)) for c in columns))


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "-" if value is None else str(value)


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


def stderr(message: str) -> None:
    print(message, file=sys.stderr)
