"""Configuration: TOML, ${VAR} expansion, GATEWAY_<SECTION>__<KEY> overrides, errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import load_config, masked_config
from gateway.domain.models import mask_dsn
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "gateway.example.toml"


def test_defaults_run_a_single_node_without_any_file() -> None:
    """No file at all gives SQLite and local pacing."""
    config = load_config(None, environ={})
    assert config.store.url.startswith("sqlite")
    assert config.pacing.backend == "local"
    assert config.store.migrates_itself


def test_the_example_config_is_valid() -> None:
    """config/gateway.example.toml documents every key and loads as it is."""
    config = load_config(EXAMPLE, environ={"GATEWAY_ENCRYPTION_KEYS": "", "STRIPE_SECRET_KEY": "sk_test_x"})
    assert config.server.port == 8080
    assert config.providers["hubspot"].rate_limit is not None


def test_env_overrides_and_variables(tmp_path: Path) -> None:
    """GATEWAY_PACING__BACKEND overrides the file; ${VAR} is replaced from the environment."""
    path = tmp_path / "g.toml"
    path.write_text('[store]\nurl = "${DB_URL}"\n[pacing]\nbackend = "local"\n')
    env = {
        "DB_URL": "postgresql://u@h/db",
        "GATEWAY_PACING__BACKEND": "redis",
        "GATEWAY_SERVER__PORT": "9000",
        "GATEWAY_PROVIDERS__HUBSPOT__RATE_LIMIT__RATE": "50",
    }
    config = load_config(path, environ=env)
    assert config.store.url == "postgresql://u@h/db"
    assert config.pacing.backend == "redis"
    assert config.server.port == 9000
    assert config.providers["hubspot"].rate_limit is not None
    assert config.providers["hubspot"].rate_limit.rate == 50


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[pacing]\nbackend = "carrier-pigeon"\n', "pacing.backend"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[server]\nprot = 1\n", "server.prot"),
        ("[providers.hubspot.rate_limit]\nrate = 0\n", "providers.hubspot.rate_limit.rate"),
        ("[providers.hubspot.rate_limit]\nburst = 0\n", "providers.hubspot.rate_limit.burst"),
        ("[providers.hubspot.rate_limit]\nper = -1\n", "providers.hubspot.rate_limit.per"),
        ("[providers.hubspot.rate_limit]\nmax_wait = -1\n", "providers.hubspot.rate_limit.max_wait"),
        ("[providers.nope]\n", "providers.nope"),
        ("[stream]\nretention = 1e300\n", "stream.retention"),  # every cleanup tick crashed on it
        ('[server]\nhost = ""\n', "server.host"),  # bound every interface
        ('[metrics]\nhost = ""\n', "metrics.host"),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, toml: str, key: str) -> None:
    """Every validation failure names the dotted key."""
    path = tmp_path / "g.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path, environ={})


CREDENTIAL = (
    '[[credentials]]\nid = "c"\nprovider = "rest"\nbase_url = "https://x.test"\n'
    + 'auth = { type = "bearer", token = "t" }\n'
)
HOOK = '[[consumers]]\nid = "h"\nkind = "webhook"\nurl = "https://x.test/h"\nsecret = "whsec_AAAAAAAAAAAAAAAAAAAA"\n'


@pytest.mark.parametrize(
    ("toml", "key", "given"),
    [
        (CREDENTIAL + 'rate_limit = { rate = "${RATE}", per = 1 }\n', "credentials.0.rate_limit.rate", "a string"),
        (CREDENTIAL + "timeouts = { connect = true }\n", "credentials.0.timeouts.connect", "a boolean"),
        (HOOK + 'batch_size = "10"\n', "consumers.0.webhook.batch_size", "a string"),
        ('[providers.hubspot.rate_limit]\nburst = "5"\n', "providers.hubspot.rate_limit.burst", "a string"),
    ],
)
def test_a_number_written_as_text_or_a_boolean_is_refused_naming_the_key(
    tmp_path: Path, toml: str, key: str, given: str
) -> None:
    """As the management API refuses them: read leniently, "5" was 5 and true was 1."""
    path = tmp_path / "g.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(f"{key}: must be a JSON number, not {given}")):
        load_config(path, environ={"RATE": "5"})


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[pacing]\nredis_url = "redis://:pw-s3cret@[::1"\n', "pacing.redis_url"),
        ('[pacing]\nredis_url = "redis://default:pw-s3cret"\n', "pacing.redis_url"),  # the password where the port goes
        ('[store]\nurl = "postgresql://u:pw-s3cret@db:99999/gw"\n', "store.url"),
    ],
)
def test_a_url_that_does_not_parse_is_refused_naming_the_key_not_the_password(
    tmp_path: Path, toml: str, key: str
) -> None:
    """Refused when loaded, not later where it is taken apart (check-config crashed on the first)."""
    path = tmp_path / "g.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as refused:
        load_config(path, environ={})
    assert "s3cret" not in refused.value.message


def test_unset_variable_is_named(tmp_path: Path) -> None:
    """A ${VAR} that is not set is an error naming the variable."""
    path = tmp_path / "g.toml"
    path.write_text('[encryption]\nkeys = "${NOT_SET_ANYWHERE}"\n')
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        load_config(path, environ={})


def test_bad_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    """Syntax errors and missing files are reported, not raised raw."""
    path = tmp_path / "g.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", environ={})


def test_declared_objects_need_ids(tmp_path: Path) -> None:
    """[[credentials]] without an id cannot be upserted idempotently, so it is refused."""
    path = tmp_path / "g.toml"
    path.write_text(
        '[[credentials]]\nprovider = "rest"\nbase_url = "https://x.test"\n'
        'auth = { type = "bearer", token = "t0ps3cret" }\n'
    )
    with pytest.raises(ConfigError, match="id"):
        load_config(path, environ={})


def test_masked_config_hides_secrets(tmp_path: Path) -> None:
    """check-config's view never shows keys, passwords or credential secrets."""
    path = tmp_path / "g.toml"
    path.write_text(
        '[store]\nurl = "postgresql://app:dbpass123@db/app"\n'
        '[encryption]\nkeys = "k1:MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="\n'
        '[[credentials]]\nid = "c1"\nprovider = "rest"\nbase_url = "https://x.test"\n'
        'auth = { type = "bearer", token = "t0ps3cret" }\n'
    )
    text = str(masked_config(load_config(path, environ={})))
    for secret in ("dbpass123", "MDEyMzQ1Njc4", "t0ps3cret"):
        assert secret not in text


SHARED = {"GATEWAY_PACING__BACKEND": "redis", "GATEWAY_STORE__URL": "postgresql://u@h/db"}


@pytest.mark.parametrize(
    ("env", "needs"),
    [
        ({"GATEWAY_STORE__URL": "postgresql://u@h/db"}, 'pacing.backend = "redis"'),
        ({"GATEWAY_PACING__BACKEND": "redis"}, "PostgreSQL store.url"),
        ({**SHARED, "GATEWAY_METRICS__PORT": "8080"}, "metrics.port"),
    ],
)
def test_workers_need_shared_pacing_store_and_their_own_metrics_port(env: dict[str, str], needs: str) -> None:
    """server.workers > 1 without Redis pacing, PostgreSQL or a separate metrics port names server.workers."""
    with pytest.raises(ConfigError, match=r"server\.workers") as refused:
        load_config(None, environ={"GATEWAY_SERVER__WORKERS": "2", **env})
    assert needs in refused.value.message


def test_workers_with_shared_state_are_valid_and_one_is_the_default() -> None:
    """Redis pacing and PostgreSQL allow several workers; zero workers is refused by name."""
    assert load_config(None, environ={}).server.workers == 1
    assert load_config(None, environ={"GATEWAY_SERVER__WORKERS": "4", **SHARED}).server.workers == 4
    with pytest.raises(ConfigError, match=r"server\.workers"):
        load_config(None, environ={"GATEWAY_SERVER__WORKERS": "0"})


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", [None, EXAMPLE])
def test_the_documented_key_variable_works_with_or_without_the_example_config(path: Path | None) -> None:
    """``GATEWAY_ENCRYPTION_KEYS`` alone configures the keys, whichever snippet a reader copied."""
    config = load_config(path, environ={"GATEWAY_ENCRYPTION_KEYS": "k1:AAAA", "STRIPE_SECRET_KEY": "x"})
    assert config.encryption.keys == "k1:AAAA"


def test_the_generic_override_still_wins_over_the_documented_variable(tmp_path: Path) -> None:
    """``GATEWAY_ENCRYPTION__KEYS`` is the generic ``<SECTION>__<KEY>`` override and beats everything."""
    env = {"GATEWAY_ENCRYPTION_KEYS": "k1:AAAA", "GATEWAY_ENCRYPTION__KEYS": "k2:BBBB"}
    assert load_config(None, environ=env).encryption.keys == "k2:BBBB"
    assert load_config(None, environ={"GATEWAY_ENCRYPTION__KEYS": "k2:BBBB"}).encryption.keys == "k2:BBBB"
    own = tmp_path / "own.toml"
    own.write_text('[encryption]\nkeys = "k3:CCCC"\n')
    assert load_config(own, environ={"GATEWAY_ENCRYPTION_KEYS": "k1:AAAA"}).encryption.keys == "k3:CCCC"


def _user_facing_files() -> list[Path]:
    patterns = ["README.md", "Dockerfile", "docs/**/*.md", "config/*", "deploy/**/*.yaml", "gateway/**/*.py"]
    return sorted({p for pattern in patterns for p in ROOT.glob(pattern) if p.is_file()})


def test_one_spelling_of_the_key_variable_in_every_user_facing_file() -> None:
    """Docs, example config, compose, Dockerfile, manifests and messages all say GATEWAY_ENCRYPTION_KEYS."""
    mixed = [str(p.relative_to(ROOT)) for p in _user_facing_files() if "GATEWAY_ENCRYPTION__KEYS" in p.read_text()]
    assert mixed == []


def test_the_repr_of_a_config_holds_no_secret() -> None:
    """The keys and the passwords in store.url and pacing.redis_url stay out of repr() (tracebacks, debug prints)."""
    environ = {
        "GATEWAY_ENCRYPTION_KEYS": "k1:c2VjcmV0LWtleS1tYXRlcmlhbA==",
        "GATEWAY_STORE__URL": "postgresql://u:store-pw@db/gw",
        "GATEWAY_PACING__REDIS_URL": "redis://:redis-pw@cache:6379/0",
    }
    text = repr(load_config(None, environ=environ))
    assert [s for s in ("c2VjcmV0LWtleS1tYXRlcmlhbA", "store-pw", "redis-pw") if s in text] == [], text


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("sqlite:////var/lib/gateway/gateway.db", "sqlite:////var/lib/gateway/gateway.db"),
        ("sqlite:///./gateway.db", "sqlite:///./gateway.db"),
        ("postgresql:///gw?host=/run/postgresql&password=pw", "postgresql:///gw?host=/run/postgresql&password=***"),
        ("postgresql://u:pw@db:5432/gw", "postgresql://u:***@db:5432/gw"),
        ("redis://:pw@[::1", "redis://:***@[::1"),  # no URL parser takes it; check-config crashed on it
        ("redis://u:pw@h:99999999/0?password=pw#f", "redis://u:***@h:99999999/0?password=***#f"),
    ],
)
def test_masking_keeps_the_rest_of_the_url_as_written(dsn: str, shown: str) -> None:
    """check-config prints a URL a reader can copy back: an empty host keeps its ``//`` (it lost it before)."""
    assert mask_dsn(dsn) == shown
