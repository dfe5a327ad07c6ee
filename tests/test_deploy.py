"""Dockerfile, compose file and Kubernetes manifests agree with the CLI, the config and the probes.

The image cannot be built here (no registry), so what can be checked is checked: the entrypoint and
command are CLI verbs, exposed ports and probe paths are the config's defaults and the ops routes, every
``GATEWAY_*`` variable names a real config key, and the manifests validate against Kubernetes' schemas.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from aiohttp import web
from pydantic import BaseModel

from gateway.cli import build_parser
from gateway.config import KEYS_ENV, Config, load_config
from gateway.http.ops import add_ops_routes

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = Config()
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))


def _ops_paths() -> set[str]:
    app = web.Application()
    add_ops_routes(app)
    return {r.canonical for r in app.router.resources()}


def _is_config_key(name: str) -> bool:
    """``GATEWAY_PACING__BACKEND`` -> pacing.backend exists; ``GATEWAY_ENCRYPTION_KEYS`` is the keys' home."""
    if name == KEYS_ENV:
        return True
    model: Any = Config
    for part in name.removeprefix("GATEWAY_").lower().split("__"):
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return True


def _dockerfile() -> dict[str, list[str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word.isupper():
            found.setdefault(word, []).append(rest.strip())
    return found


def test_dockerfile_matches_the_cli_config_and_probes() -> None:
    docker = _dockerfile()
    assert json.loads(docker["ENTRYPOINT"][-1]) == ["gateway"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gateway"] == "gateway.cli:main"
    assert build_parser().parse_args(json.loads(docker["CMD"][-1])).verb == "serve"
    assert {int(p) for p in docker["EXPOSE"][-1].split()} == {DEFAULTS.server.port, DEFAULTS.metrics.port}
    [check] = docker["HEALTHCHECK"]
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", check)
    assert url and int(url.group(1)) == DEFAULTS.metrics.port and url.group(2) == "/healthz" in _ops_paths()
    names = set(re.findall(r"GATEWAY_[A-Z][A-Z_]*", (ROOT / "Dockerfile").read_text()))  # comments included
    assert KEYS_ENV in names and all(_is_config_key(n) for n in names), names
    load_config(None, environ={n: v for n, v in re.findall(r"\b(GATEWAY_[A-Z_]+)=(\S+)", docker["ENV"][-1])})


def test_the_image_build_copies_what_the_package_links_to() -> None:
    """A symlink in gateway/ whose target the build stage does not copy dangles there: the file is not shipped."""
    copied = {source for line in _dockerfile()["COPY"] if not line.startswith("--from") for source in line.split()[:-1]}
    targets = {
        str(path.resolve().relative_to(ROOT))
        for path in (ROOT / "gateway").rglob("*")
        if path.is_symlink() and "__pycache__" not in path.parts
    }
    assert targets, "gateway/docs/errors.md is a link to docs/errors.md"
    missing = {t for t in targets if not any(t == c or t.startswith(c.rstrip("/") + "/") for c in copied)}
    assert missing == set(), f"the Dockerfile's build stage does not COPY {sorted(missing)}"


def test_compose_env_ports_and_commands_are_real() -> None:
    compose = yaml.safe_load((ROOT / "config" / "docker-compose.yml").read_text())
    gateway = compose["x-gateway"]
    assert all(_is_config_key(name) for name in gateway["environment"]), gateway["environment"]
    assert build_parser().parse_args(compose["services"]["migrate"]["command"]).verb == "migrate"
    for name in ("gateway-1", "gateway-2"):
        inside = {int(p.rsplit(":", 1)[1]) for p in compose["services"][name]["ports"]}
        assert inside == {DEFAULTS.server.port, DEFAULTS.metrics.port}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [(m.name, doc) for m in MANIFESTS for doc in yaml.safe_load_all(m.read_text()) if doc]


@pytest.mark.parametrize(("manifest", "doc"), _documents(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifests_validate_against_the_kubernetes_schemas(manifest: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def _gateway_pods() -> list[tuple[dict[str, Any], dict[str, Any], Config]]:
    """(pod template, gateway container, the config its ConfigMap holds) for each gateway workload."""
    docs = [doc for _, doc in _documents()]
    configs = {d["metadata"]["name"]: d["data"]["gateway.toml"] for d in docs if d["kind"] == "ConfigMap"}
    found = []
    for doc in (d for d in docs if d["kind"] == "Deployment"):
        template = doc["spec"]["template"]
        for container in template["spec"]["containers"]:
            if container["image"].startswith("gateway:"):
                volume = next(v for v in template["spec"]["volumes"] if "configMap" in v)
                text = configs[volume["configMap"]["name"]]
                env = {"POSTGRES_PASSWORD": "x", "STRIPE_SECRET_KEY": "x"}
                path = _write(text)
                found.append((template, container, load_config(path, environ=env)))
                path.unlink()
    return found


def _write(text: str) -> Path:
    import tempfile

    handle = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)  # noqa: SIM115
    handle.write(text)
    handle.close()
    return Path(handle.name)


def test_gateway_containers_run_cli_verbs_with_probes_on_the_metrics_port() -> None:
    pods = _gateway_pods()
    assert len(pods) == 2  # the sidecar and the edge
    for template, container, config in pods:
        assert build_parser().parse_args(container["args"]).verb == "serve"
        [metrics] = [p for p in container["ports"] if p["name"] == "metrics"]
        assert metrics["containerPort"] == config.metrics.port and config.metrics.host == "0.0.0.0"
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(config.metrics.port)
        assert template["metadata"]["annotations"]["prometheus.io/path"] == "/metrics" in _ops_paths()
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert container[probe]["httpGet"] == {"path": path, "port": "metrics"} and path in _ops_paths()
        grace = template["spec"]["terminationGracePeriodSeconds"]
        assert grace > config.server.shutdown_timeout


def test_every_container_has_resources_and_the_edge_has_two_replicas_and_a_pdb() -> None:
    docs = [doc for _, doc in _documents()]
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], container["name"]
    [edge] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway-edge"]
    assert edge["spec"]["replicas"] == 2
    labels = edge["spec"]["template"]["metadata"]["labels"]
    [pdb] = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items() and pdb["spec"]["minAvailable"] == 1
    edge_config = next(c for t, _, c in _gateway_pods() if t["metadata"]["labels"] == labels)
    assert edge_config.pacing.backend == "redis" and not edge_config.store.is_sqlite
