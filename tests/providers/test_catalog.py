"""The provider catalog: data files validated at start, user additions, the read API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.catalog import builtin, builtin_files
from gateway.cli import main
from gateway.config import Config, load_config
from gateway.errors import ConfigError
from tests.conftest import GatewayFactory

SPEC_PROVIDERS = {
    "salesforce", "hubspot", "stripe", "airtable", "rest", "github", "gitlab", "shopify", "slack", "zendesk",
    "intercom", "notion", "jira", "linear", "asana", "pipedrive", "xero", "quickbooks", "mailchimp", "twilio",
    "sendgrid", "google", "microsoft_graph", "openai",
}  # fmt: skip
ACME = """
display_name = "Acme"
base_url = "https://api.acme.test"
auth = ["bearer"]
[rate_limit]
rate = 7
per = 1
"""


def test_the_catalog_covers_the_spec_and_every_file_cites_its_source() -> None:
    """Every listed provider ships as a valid file whose comment cites a page (or says there is none)."""
    assert set(builtin()) >= SPEC_PROVIDERS
    for name, text in builtin_files().items():
        comment = "\n".join(line for line in text.splitlines() if line.startswith("#"))
        cited = re.search(r"https://\S+", comment) is not None
        assert cited or "No public page" in comment, name
        assert all(source.startswith("https://") for source in builtin()[name].definition.sources), name


def test_catalog_dir_adds_providers_and_a_bad_file_names_file_and_key(tmp_path: Path) -> None:
    """A user file adds a provider; a typo in one stops the load naming the file and the key."""
    (tmp_path / "acme.toml").write_text(ACME)
    config = Config.model_validate({"providers": {"catalog_dir": str(tmp_path)}})
    assert config.catalog["acme"].definition.rate_limit.rate == 7
    (tmp_path / "broken.toml").write_text(ACME.replace("rate = 7", "rate = 7\nrat = 3"))
    with pytest.raises(ConfigError, match=r"broken\.toml: rate_limit\.rat: Extra inputs"):
        load_config(_config_file(tmp_path, f'[providers]\ncatalog_dir = "{tmp_path}"\n'), environ={})


def test_a_bad_catalog_file_makes_check_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI exits 2 and names the file and the key (here a window with rate 0)."""
    (tmp_path / "acme.toml").write_text(ACME + "windows = [{ rate = 0, per = 60 }]\n")
    path = _config_file(tmp_path, f'[providers]\ncatalog_dir = "{tmp_path}"\n')
    assert main(["check-config", "--config", str(path)]) == 2
    assert re.search(r"acme\.toml: rate_limit\.windows\.0\.rate", capsys.readouterr().err)


def test_inline_provider_tables_add_or_override(tmp_path: Path) -> None:
    """[providers.acme] with the catalog's keys adds a provider; [providers.hubspot] overrides keys."""
    config = Config.model_validate(
        {
            "providers": {
                "acme": {"display_name": "Acme", "base_url": "https://a.test", "auth": ["bearer"],
                         "rate_limit": {"rate": 2, "per": 1}},
                "hubspot": {"display_name": "HubSpot EU", "rate_limit": {"rate": 50}},
            }
        }
    )  # fmt: skip
    assert config.catalog["acme"].origin == "config"
    assert config.catalog["hubspot"].definition.display_name == "HubSpot EU"
    assert config.catalog["hubspot"].definition.rate_limit.rate == 100  # the override applies per credential
    with pytest.raises(ValueError, match=r"providers\.nope: .*display_name"):
        Config.model_validate({"providers": {"nope": {"rate_limit": {"rate": 1, "per": 1}}}})


def test_config_credentials_must_name_a_catalog_provider() -> None:
    auth = {"type": "bearer", "token": "t"}
    credential = {"id": "c1", "provider": "acme", "base_url": "https://a.test", "auth": auth}
    with pytest.raises(ValueError, match="unknown provider acme"):
        Config.model_validate({"credentials": [credential]})


def test_a_rule_cost_above_the_smallest_burst_is_a_config_error(tmp_path: Path) -> None:
    """check_config (run at start) refuses a cost no bucket could grant, naming the place and the field."""
    text = '[providers.rest.rate_limit]\nburst = 3\nrules = [{ match = { path = "/x/**" }, cost = 5 }]\n'
    path = _config_file(tmp_path, text)
    assert main(["check-config", "--config", str(path)]) == 2


async def test_the_catalog_is_readable_with_any_scope(make_gateway: GatewayFactory) -> None:
    """GET /v1/providers lists the catalog for a proxy-only token; one entry by name; 404 and 400."""
    gw = await make_gateway()
    token = await gw.token("reader", ["proxy"])
    listed = await (await gw.client.get("/v1/providers", headers=gw.auth(token))).json()
    assert {p["name"] for p in listed["data"]} >= SPEC_PROVIDERS
    hubspot = await (await gw.client.get("/v1/providers/hubspot", headers=gw.auth(token))).json()
    assert hubspot["rate_limit"]["rules"][0]["match"]["path"] == "/crm/v3/objects/*/search"
    assert hubspot["sources"] and hubspot["origin"] == "builtin"
    assert (await gw.client.get("/v1/providers/nope", headers=gw.auth(token))).status == 404
    bad = await gw.client.get("/v1/providers/Bad-Name", headers=gw.auth(token))
    assert bad.status == 400 and (await bad.json())["code"] == "invalid_request"
    assert (await gw.client.get("/v1/providers")).status == 401
    document = await (await gw.client.get("/v1/openapi.json", headers=gw.auth())).json()
    assert {"/v1/providers", "/v1/providers/{name}"} <= set(document["paths"])


async def test_a_credential_of_an_unknown_provider_is_refused(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    body = {"provider": "acme", "base_url": "https://a.test", "auth": {"type": "bearer", "token": "t"}}
    resp = await gw.client.post("/v1/credentials", json=body, headers=gw.auth())
    assert resp.status == 400
    assert "provider" in (await resp.json())["error"]


def _config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path
