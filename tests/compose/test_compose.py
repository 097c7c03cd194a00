"""compose/: the compose file, image and Prometheus/Grafana config agree with the code.

No Docker engine is needed: the YAML is parsed and checked against the real packages and
settings classes. When `docker-compose` is on PATH, its own `config` validation runs too.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from common.settings import SHARED_FIELDS, ServiceSettings
from rate_limiter.rules_files import load_rules
from rate_limiter.settings import RateLimiterSettings
from url_shortener.settings import UrlShortenerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
COMPOSE_FILE = COMPOSE / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE / ".env.example"
DOCKERFILE = COMPOSE / "Dockerfile"
PROMETHEUS = COMPOSE / "prometheus.yml"

_VAR = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def env_example() -> dict[str, str]:
    """compose/.env.example as compose reads it: NAME=value lines, # comments."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (and $$ for a literal $)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        found = env.get(name)
        if op in (":-", "-") and not found:
            return arg or ""
        if op in (":?", "?") and not found:
            raise AssertionError(f"${{{name}}} is required: {arg}")
        return found or ""

    return _VAR.sub(one, value).replace("$$", "$")


def required_vars(text: str) -> set[str]:
    return {m["name"] for m in _VAR.finditer(text) if m["op"] in (":?", "?")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def module_of(service: dict[str, Any]) -> str | None:
    """X for a service whose command is `python -m X`, else None."""
    command = service.get("command")
    if isinstance(command, str):
        command = command.split()
    if command and command[:2] == ["python", "-m"] and len(command) >= 3:
        return str(command[2])
    return None


def app_services(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Compose service name -> the package it serves over HTTP (`python -m <package>`)."""
    found = {}
    for name, service in services.items():
        module = module_of(service)
        if module is not None and "." not in module:
            found[name] = module
    return found


def helper_processes(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Compose service name -> the module of a service's non-HTTP process
    (`python -m task_queue.worker`)."""
    found = {}
    for name, service in services.items():
        module = module_of(service)
        if module is not None and "." in module:
            found[name] = module
    return found


def settings_class(module: str) -> type[ServiceSettings]:
    """The one ServiceSettings subclass defined in <module>.settings."""
    settings_module = importlib.import_module(f"{module}.settings")
    classes = [
        obj
        for obj in vars(settings_module).values()
        if inspect.isclass(obj)
        and issubclass(obj, ServiceSettings)
        and obj is not ServiceSettings
        and obj.__module__ == settings_module.__name__
    ]
    assert len(classes) == 1, f"{module}.settings should define one settings class: {classes}"
    return classes[0]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def container_ports(service: dict[str, Any]) -> list[int]:
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append(int(entry["target"]))
        else:
            ports.append(int(str(entry).split(":")[-1].split("/")[0]))
    return ports


def healthcheck_url(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(test)
    match = re.search(r"https?://[^'\"\s]+", text)
    assert match, f"healthcheck names no URL: {text}"
    return match.group(0)


# --- the compose file --------------------------------------------------------------------


def test_compose_file_uses_the_spec_without_version(compose: dict[str, Any]) -> None:
    assert "version" not in compose
    assert {"redis", "postgres"} <= set(compose["services"])


def test_the_known_services_are_run_with_their_settings(
    services: dict[str, dict[str, Any]],
) -> None:
    apps = app_services(services)
    assert apps["url_shortener"] == "url_shortener"
    assert apps["rate_limiter"] == "rate_limiter"
    assert settings_class("url_shortener") is UrlShortenerSettings
    assert settings_class("rate_limiter") is RateLimiterSettings


def test_every_python_m_service_is_a_real_package_with_main(
    services: dict[str, dict[str, Any]],
) -> None:
    apps = app_services(services)
    assert apps
    for name, module in apps.items():
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{name}: no package {module}"
        assert spec.submodule_search_locations, f"{name}: {module} is not a package"
        assert importlib.util.find_spec(f"{module}.__main__") is not None, (
            f"{name}: {module} has no __main__"
        )


def test_redis_is_durable_and_health_checked(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    command = redis["command"] if isinstance(redis["command"], list) else redis["command"].split()
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    assert "redis-cli" in redis["healthcheck"]["test"]
    assert "ping" in redis["healthcheck"]["test"]


def test_postgres_is_durable_and_health_checked(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert str(postgres["image"]).startswith("postgres:16")
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    password = postgres["environment"]["POSTGRES_PASSWORD"]
    assert "POSTGRES_PASSWORD" in required_vars(password), "the password must not have a default"


def test_app_services_wait_for_healthy_dependencies(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in app_services(services):
        service = services[name]
        depends = service.get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        assert depends["redis"] == {"condition": "service_healthy"}, name
        env = environment(service)
        uses_postgres = any("@postgres:" in v for v in env.values())
        if name == "url_shortener":
            assert uses_postgres, "url_shortener keeps its links in the compose PostgreSQL"
        if uses_postgres:
            assert depends["postgres"] == {"condition": "service_healthy"}, name
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name


def test_app_services_point_at_the_compose_redis_and_postgres(
    services: dict[str, dict[str, Any]],
) -> None:
    example = env_example()
    for name in app_services(services):
        env = environment(services[name])
        assert urlsplit(interpolate(env["REDIS_URL"], example)).hostname == "redis", name
    raw = environment(services["url_shortener"])["DATABASE_URL"]
    database = urlsplit(interpolate(raw, example))
    assert database.scheme == "postgresql"
    assert database.hostname == "postgres"


def test_ports_and_healthchecks_match_each_settings_default_port(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, module in app_services(services).items():
        cls = settings_class(module)
        default_port = cls(_env_file=None).port  # type: ignore[call-arg]
        service = services[name]
        assert container_ports(service) == [default_port], name
        prefix = cls.model_config.get("env_prefix", "")
        env = environment(service)
        assert env.get(f"{prefix}PORT", str(default_port)) == str(default_port), name
        assert env[f"{prefix}HOST"] == "0.0.0.0", f"{name} must listen beyond the container"
        url = urlsplit(healthcheck_url(service))
        assert url.port == default_port, name
        assert url.path == "/readyz", name
        assert "python" in service["healthcheck"]["test"], "the slim image has no curl"


def test_env_names_are_real_settings_fields(services: dict[str, dict[str, Any]]) -> None:
    shared = {field.upper() for field in SHARED_FIELDS}
    for name, module in app_services(services).items():
        cls = settings_class(module)
        prefix = str(cls.model_config.get("env_prefix", ""))
        assert prefix, f"{module}: settings need an env prefix"
        for var in environment(services[name]):
            if var.startswith(prefix):
                field = var[len(prefix) :].lower()
                assert field in cls.model_fields, f"{name}: {var} is not a field of {cls}"
            else:
                assert var in shared, f"{name}: {var} is neither {prefix}* nor a shared name"


def test_compose_env_with_the_example_file_is_production_and_refuses_placeholders(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = env_example()
    for name, module in app_services(services).items():
        cls = settings_class(module)
        prefix = str(cls.model_config.get("env_prefix", ""))
        for var in list(os.environ):
            if var.startswith(prefix) or var.lower() in SHARED_FIELDS:
                monkeypatch.delenv(var)
        for var, raw in environment(services[name]).items():
            monkeypatch.setenv(var, interpolate(raw, example))
        settings = cls(_env_file=None)  # type: ignore[call-arg]
        assert settings.environment == "production", name
        assert settings.host == "0.0.0.0"
        checked = getattr(settings, "checked", None)
        if checked is not None:
            # The example's CHANGE-... placeholders must be refused: a copy left unedited
            # cannot start in production.
            with pytest.raises(ValueError, match="real secret"):
                checked()
        for var in list(os.environ):
            if var.startswith(prefix) or var.lower() in SHARED_FIELDS:
                monkeypatch.delenv(var)


def test_secrets_are_required_and_the_example_holds_only_placeholders() -> None:
    text = COMPOSE_FILE.read_text()
    required = required_vars(text)
    assert {
        "POSTGRES_PASSWORD",
        "URL_SHORTENER_ADMIN_KEY",
        "URL_SHORTENER_CODE_SECRET",
    } <= required
    example = env_example()
    missing = required - set(example)
    assert not missing, f".env.example lacks {missing}"
    for var in required:
        assert example[var].startswith("CHANGE"), f"{var} in .env.example must be a placeholder"
    # Every variable compose reads is documented in the example.
    assert {m["name"] for m in _VAR.finditer(text)} <= set(example)


def test_rate_limiter_rules_mount_holds_valid_rules(services: dict[str, dict[str, Any]]) -> None:
    service = services["rate_limiter"]
    target = environment(service)["RATE_LIMITER_RULES"]
    sources = [str(v).split(":")[0] for v in service["volumes"] if str(v).split(":")[1] == target]
    assert len(sources) == 1, f"nothing is mounted at {target}"
    rules = load_rules((COMPOSE / sources[0]).resolve())
    assert rules.domains


# --- the image -----------------------------------------------------------------------------


def test_dockerfile_installs_the_project_without_dev_extras_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M)
    assert "COPY pyproject.toml" in text
    assert re.search(r"pip install --no-deps \.\s", text), "installs the project itself"
    assert "[dev]" not in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users, "the image must not run as root"
    assert users[-1] not in {"root", "0"}
    # Dependencies are installed before the source is copied, for layer caching.
    assert text.index("pip install -r") < text.index("COPY . .")


def test_services_build_the_suite_image(services: dict[str, dict[str, Any]]) -> None:
    for name in app_services(services):
        build = services[name]["build"]
        assert (COMPOSE / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, name
        assert (COMPOSE / build["context"] / "pyproject.toml").exists()


# --- observability -------------------------------------------------------------------------


def test_prometheus_scrapes_every_app_service(services: dict[str, dict[str, Any]]) -> None:
    config = load_yaml(PROMETHEUS)
    targets = {
        (job.get("metrics_path", "/metrics"), target)
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    for name, module in app_services(services).items():
        port = settings_class(module)(_env_file=None).port  # type: ignore[call-arg]
        assert ("/metrics", f"{name}:{port}") in targets, f"Prometheus does not scrape {name}"
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["observability"]
    assert any(str(v).startswith("./prometheus.yml:") for v in prometheus["volumes"])


def test_grafana_is_provisioned_with_the_prometheus_datasource(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    assert grafana["profiles"] == ["observability"]
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in grafana["volumes"]}
    provisioning = COMPOSE / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert [d["url"] for d in datasources] == ["http://prometheus:9090"]
    providers = load_yaml(provisioning / "dashboards" / "suite.yml")["providers"]
    dashboards_dir = providers[0]["options"]["path"]
    source = next(src for src, dst in mounts.items() if dst == dashboards_dir)
    assert list((COMPOSE / source).glob("*.json")), "no dashboards to provision"


# --- docker-compose's own validation, when it is installed ----------------------------------


def test_compose_config_is_valid() -> None:
    """The YAML parses and references only files that exist; docker-compose agrees if present."""
    compose = load_yaml(COMPOSE_FILE)
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"missing mount source {source}"
    binary = shutil.which("docker-compose")
    if binary is not None:
        result = subprocess.run(
            [binary, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


# --- Envoy in front of the url_shortener, asking the rate limiter over gRPC -----------------

ENVOY_FILE = COMPOSE / "envoy" / "envoy.yaml"
RATELIMIT_FILTER = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"


def _find(node: Any, key: str) -> list[Any]:
    """Every value under `key`, anywhere in a parsed YAML tree."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found.extend(_find(v, key))
    elif isinstance(node, list):
        for item in node:
            found.extend(_find(item, key))
    return found


def _endpoint(cluster: dict[str, Any]) -> tuple[str, int]:
    [address] = _find(cluster["load_assignment"], "socket_address")
    return address["address"], int(address["port_value"])


def test_envoy_fronts_the_shortener_and_asks_the_limiter_over_grpc(
    services: dict[str, dict[str, Any]],
) -> None:
    envoy = services["envoy"]
    assert "./envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro" in envoy["volumes"]
    for dependency in ("url_shortener", "rate_limiter"):
        assert envoy["depends_on"][dependency] == {"condition": "service_healthy"}
    config = load_yaml(ENVOY_FILE)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}

    # The ratelimit filter runs before the router and calls the v3 API on the limiter's
    # gRPC port, over HTTP/2.
    [filters] = _find(config, "http_filters")
    names = [f["name"] for f in filters]
    assert names.index("envoy.filters.http.ratelimit") < names.index("envoy.filters.http.router")
    [rl] = [f["typed_config"] for f in filters if f["name"] == "envoy.filters.http.ratelimit"]
    assert rl["@type"] == RATELIMIT_FILTER
    assert rl["rate_limit_service"]["transport_api_version"] == "V3"
    limiter = clusters[rl["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]]
    assert _find(limiter, "http2_protocol_options"), "gRPC needs HTTP/2 to the limiter"
    env = environment(services["rate_limiter"])
    assert _endpoint(limiter) == ("rate_limiter", int(env["RATE_LIMITER_GRPC_PORT"]))
    assert RateLimiterSettings.model_fields["grpc_port"].default == 8081

    # Routes go to the shortener on its own port.
    shortener_port = int(environment(services["url_shortener"])["URL_SHORTENER_PORT"])
    for cluster in _find(config, "cluster"):
        assert _endpoint(clusters[cluster]) == ("url_shortener", shortener_port)

    # Every descriptor the routes send meets a limit in the domain's rules, as the limiter
    # reads them (Envoy's remote_address and generic_key actions, with sample values).
    rules = load_rules(COMPOSE / "rate_limiter" / "rules").domains[rl["domain"]]
    for policy in _find(config, "rate_limits"):
        for entry in policy:
            entries = []
            for action in entry["actions"]:
                if "remote_address" in action:
                    entries.append(("remote_address", "203.0.113.9"))
                else:
                    generic = action["generic_key"]
                    key = generic.get("descriptor_key", "generic_key")
                    entries.append((key, generic["descriptor_value"]))
            assert rules.match(entries), f"no rule for {entries}"


def test_envoy_config_validates_when_envoy_is_installed() -> None:
    binary = shutil.which("envoy")
    if binary is None:
        pytest.skip("no envoy binary on PATH (the YAML is checked above)")
    result = subprocess.run(
        [binary, "--mode", "validate", "-c", str(ENVOY_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_helper_processes_run_real_modules_with_their_services_settings(
    services: dict[str, dict[str, Any]],
) -> None:
    helpers = helper_processes(services)
    assert helpers["task_queue_worker"] == "task_queue.worker"
    assert helpers["task_queue_scheduler"] == "task_queue.scheduler"
    for name, module in helpers.items():
        assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"
        cls = settings_class(module.split(".")[0])
        prefix = str(cls.model_config.get("env_prefix", ""))
        for var in environment(services[name]):
            if var.startswith(prefix):
                assert var[len(prefix) :].lower() in cls.model_fields, f"{name}: {var}"
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}, name
