"""deploy/ and docs/operations.md stay true to the code: every `meterd` command and flag they run exists, every
setting and METERD_* variable they name is a real one, probes and scrapes use the ports the commands listen on,
`meterd config validate` accepts the config files as the containers see them, and the alerting rules name
metrics meterd defines. Nothing here needs Docker or Kubernetes: the files are read as YAML."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click
import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from meterd.cli.main import cli
from meterd.http.routes import events, system
from meterd.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
CLUSTER_CONFIG = DEPLOY / "meterd-cluster.yaml"
KUBERNETES = DEPLOY / "kubernetes"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"
IMAGE = "ghcr.io/meterd/meterd"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SERVED = {
    "serve": {"/healthz", "/readyz", "/metrics"},
    "sink": {"/healthz", "/metrics"},
    "worker": {"/healthz", "/metrics"},
}


# -- reading the files -------------------------------------------------------------------------------------------


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))


def _documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _compose() -> dict[str, Any]:
    return dict(_documents(COMPOSE)[0])


def _interpolate(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}: the default, else a placeholder."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*)|:\?[^}]*)?\}", lambda m: m.group(2) or f"placeholder-{m.group(1)}", value)


def _compose_services() -> dict[str, dict[str, Any]]:
    """The compose services that run meterd's image."""
    services = _compose()["services"]
    return {name: svc for name, svc in services.items() if str(svc.get("image", "")).startswith(IMAGE)}


def _compose_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: _interpolate(str(value)) for key, value in env.items()}


def _k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERNETES.glob("*.yaml")) for doc in _documents(path)]


def _k8s_one(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in _k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"deploy/kubernetes should hold one {kind} {name}"
    return found[0]


@dataclass
class Container:
    """A meterd container of a Kubernetes workload, with what its pod says about it."""

    where: str
    spec: dict[str, Any]
    pod: dict[str, Any]
    init: bool = False
    annotations: dict[str, str] = field(default_factory=dict)


def _k8s_containers() -> Iterator[Container]:
    for obj in _k8s_objects():
        template = obj.get("spec", {}).get("template")
        if template is None:
            continue
        pod = template["spec"]
        annotations = template.get("metadata", {}).get("annotations", {})
        for init, key in ((True, "initContainers"), (False, "containers")):
            for spec in pod.get(key, []):
                if str(spec["image"]).startswith(IMAGE):
                    where = f"{obj['kind']} {obj['metadata']['name']} container {spec['name']}"
                    yield Container(where, spec, pod, init, annotations)


def _configmap_text() -> str:
    return str(_k8s_one("ConfigMap", "meterd-config")["data"]["meterd.yaml"])


def _secret_env() -> dict[str, str]:
    return {key: str(value) for key, value in _k8s_one("Secret", "meterd-secrets")["stringData"].items()}


# -- the real CLI --------------------------------------------------------------------------------------------------


@dataclass
class Invocation:
    path: list[str]  # e.g. ["config", "validate"]
    values: dict[str, Any]  # every option of the last command: given, else its default


def _find_option(command: click.Command, token: str) -> click.Option | None:
    for param in command.params:
        if isinstance(param, click.Option) and token in (*param.opts, *param.secondary_opts):
            return param
    return None


def _parse(args: list[str]) -> Invocation:
    """Walk `meterd ARGS` through click's own command objects (cli.commands, each command's params) and convert
    every value with the option's type; raise click.UsageError for what the real CLI would refuse."""
    command: click.Command = cli
    path: list[str] = []
    given: dict[str, Any] = {}
    tokens = list(args)
    while tokens:
        token = tokens.pop(0)
        if token.startswith("-"):
            name, _, inline = token.partition("=")
            option = _find_option(command, name)
            if option is None:
                raise click.UsageError(f"`meterd {' '.join(path)}` has no option {name}")
            if option.is_flag:
                given[option.name or name] = True
                continue
            raw = inline or (tokens.pop(0) if tokens else None)
            if raw is None:
                raise click.UsageError(f"{name} needs a value")
            given[option.name or name] = option.type.convert(raw, option, None)
        elif isinstance(command, click.Group):
            sub = command.commands.get(token)
            if sub is None:
                raise click.UsageError(f"`meterd {' '.join(path)}` has no command {token!r}")
            command, given = sub, {}
            path.append(token)
        else:
            arguments = [p for p in command.params if isinstance(p, click.Argument)]
            if not arguments:
                raise click.UsageError(f"`meterd {' '.join(path)}` takes no argument {token!r}")
    if isinstance(command, click.Group):
        raise click.UsageError(f"`meterd {' '.join(path)}` needs a command")
    values = {p.name: p.default for p in command.params if isinstance(p, click.Option) and p.name}
    return Invocation(path, {**values, **given})


def _every_command() -> Iterator[tuple[str, list[str]]]:
    for name, service in _compose_services().items():
        yield f"compose service {name}", [str(a) for a in service["command"]]
    for container in _k8s_containers():
        yield container.where, [str(a) for a in container.spec["args"]]


def _operations_commands() -> Iterator[list[str]]:
    """`meterd ...` commands quoted in docs/operations.md (inline code), without placeholders or pipes."""
    for snippet in re.findall(r"`(meterd [^`]+)`", OPERATIONS.read_text()):
        if any(ch in snippet for ch in "<>|$[…") or "..." in snippet:
            continue
        yield snippet.split()[1:]


# -- settings --------------------------------------------------------------------------------------------------------


def _section(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    annotation = model.model_fields[name].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _setting_of(variable: str) -> str | None:
    """The setting a METERD_A__B variable sets (`a.b`), or None when no setting has that name."""
    if not variable.startswith("METERD_"):
        return None
    parts = variable.removeprefix("METERD_").lower().split("__")
    model: type[BaseModel] | None = Settings
    for index, part in enumerate(parts):
        if model is None or part not in model.model_fields:
            return None
        if index < len(parts) - 1:
            model = _section(model, part)
    return ".".join(parts)


def _unknown_keys(values: Mapping[str, Any], model: type[BaseModel], prefix: str = "") -> list[str]:
    unknown = []
    for key, value in values.items():
        if key not in model.model_fields:
            unknown.append(prefix + key)
        elif (section := _section(model, key)) is not None and isinstance(value, Mapping):
            unknown += _unknown_keys(value, section, f"{prefix}{key}.")
    return unknown


def _cli_variables() -> set[str]:
    """Variables the `meterd` group reads itself (METERD_CONFIG for --config)."""
    return {str(p.envvar) for p in cli.params if isinstance(p.envvar, str)}


def _setting(settings: Settings, dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _documented_settings() -> Iterator[str]:
    """Dotted setting names in docs/operations.md's inline code (`kafka.partitions`, `sink.max_lag_events: ...`)."""
    sections = {name for name in Settings.model_fields if _section(Settings, name) is not None}
    for snippet in re.findall(r"`([a-z_]+\.[a-z_.]+)(?:[:= ][^`]*)?`", OPERATIONS.read_text()):
        if snippet.split(".")[0] in sections:
            yield snippet


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No METERD_* variable from the test run itself reaches the settings."""
    for name in list(os.environ):
        if name.startswith("METERD_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _k8s_env(container: Container) -> dict[str, str]:
    """The container's METERD_* variables as the pod sees them (secretKeyRef values from secret.example.yaml)."""
    secret, env = _secret_env(), {}
    for item in container.spec.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "meterd-secrets", f"{container.where}: {item['name']} from an unknown Secret"
            assert ref["key"] in secret, f"{container.where}: the Secret has no key {ref['key']}"
            env[item["name"]] = secret[ref["key"]]
    return env


def _load_as_seen(monkeypatch: pytest.MonkeyPatch, config: Path, env: Mapping[str, str]) -> Settings:
    for name, value in env.items():
        if name not in _cli_variables():
            monkeypatch.setenv(name, value)
    try:
        return load_settings(config)
    finally:
        for name in env:
            monkeypatch.delenv(name, raising=False)


# -- (0) the files parse -------------------------------------------------------------------------------------------


def test_deploy_holds_the_documented_examples() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()}
    assert {"Dockerfile", "docker-compose.yml", "meterd-cluster.yaml", "prometheus/alerts.yaml"} <= names
    kinds = {(o["kind"], o["metadata"]["name"]) for o in _k8s_objects()}
    assert {
        ("ConfigMap", "meterd-config"),
        ("Secret", "meterd-secrets"),
        ("Job", "meterd-migrate"),
        ("Deployment", "meterd-api"),
        ("Service", "meterd-api"),
        ("Deployment", "meterd-sink"),
        ("Deployment", "meterd-worker"),
    } <= kinds


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_parses(path: Path) -> None:
    documents = _documents(path)
    assert documents and all(isinstance(doc, dict) for doc in documents)


def test_the_dockerfile_installs_meterd_and_runs_it() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "pip install ." in text
    assert 'ENTRYPOINT ["meterd"]' in text
    copied = re.findall(r"^COPY (.+) \S+$", text, re.M)
    needed = {"pyproject.toml", "README.md", "src"}  # what `pip install .` builds from (pyproject.toml's readme)
    assert needed <= {part for line in copied for part in line.split()}
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {f"!{name}" for name in needed} <= set(ignore)


# -- (a) every meterd command and flag exists ----------------------------------------------------------------------


@pytest.mark.parametrize(("where", "args"), list(_every_command()), ids=lambda v: v if isinstance(v, str) else "args")
def test_every_command_and_flag_exists_in_the_cli(where: str, args: list[str]) -> None:
    try:
        _parse(args)
    except click.UsageError as exc:
        pytest.fail(f"{where}: `meterd {' '.join(args)}`: {exc.message}")


def test_the_command_check_refuses_what_the_cli_refuses() -> None:
    assert _parse(["sink", "--health-port", "10000"]).values["health_port"] == 10000
    assert _parse(["worker"]).values["health_port"] == 10002  # defaults are filled in
    for wrong in (["snik"], ["sink", "--health-prot", "1"], ["sink", "--health-port", "x"], ["config"]):
        with pytest.raises(click.UsageError):
            _parse(wrong)


def test_the_examples_run_every_process_of_a_cluster() -> None:
    compose = [tuple(_parse([str(a) for a in s["command"]]).path) for s in _compose_services().values()]
    assert sorted(compose) == sorted([("migrate",), ("serve",), ("serve",), ("sink",), ("sink",), ("worker",)])
    k8s = {tuple(_parse([str(a) for a in c.spec["args"]]).path) for c in _k8s_containers() if not c.init}
    assert k8s == {("migrate",), ("serve",), ("sink",), ("worker",)}


def test_docs_operations_quotes_only_real_commands() -> None:
    commands = list(_operations_commands())
    assert len(commands) >= 5
    for args in commands:
        try:
            _parse(args)
        except click.UsageError as exc:
            pytest.fail(f"docs/operations.md: `meterd {' '.join(args)}`: {exc.message}")


# -- (b) every variable and setting is real ------------------------------------------------------------------------


def test_every_meterd_variable_is_a_setting() -> None:
    variables: dict[str, str] = {}
    for name, service in _compose_services().items():
        variables.update({v: f"compose service {name}" for v in _compose_env(service)})
    for container in _k8s_containers():
        variables.update({item["name"]: container.where for item in container.spec.get("env", [])})
    variables.update({key: "secret.example.yaml" for key in _secret_env()})
    wrong = {
        f"{where}: {name}"
        for name, where in variables.items()
        if name.startswith("METERD_") and name not in _cli_variables() and _setting_of(name) is None
    }
    assert not wrong, f"not settings: {sorted(wrong)}"
    assert _setting_of("METERD_KAFKA__SASL_PASSWORD") == "kafka.sasl_password"
    assert _setting_of("METERD_KAFKA__SASL_PASSWORD_FILE") is None
    assert _setting_of("METERD_SERVER__PORT__X") is None


@pytest.mark.parametrize("name", ["meterd-cluster.yaml", "ConfigMap meterd-config"])
def test_every_key_of_the_config_files_is_a_setting(name: str) -> None:
    text = CLUSTER_CONFIG.read_text() if name == "meterd-cluster.yaml" else _configmap_text()
    assert _unknown_keys(yaml.safe_load(text), Settings) == []


def test_the_compose_config_file_is_valid_alone(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(CLUSTER_CONFIG)
    assert settings.mode == "cluster"
    assert settings.notifications.worker is False  # the compose file runs `meterd worker`


def test_each_compose_service_gets_valid_settings_and_its_secrets(clean_env: pytest.MonkeyPatch) -> None:
    for name, service in _compose_services().items():
        env = _compose_env(service)
        assert env.get("METERD_CONFIG") == "/etc/meterd/meterd.yaml", name
        mounts = [str(v) for v in service.get("volumes", [])]
        assert f"./{CLUSTER_CONFIG.name}:/etc/meterd/meterd.yaml:ro" in mounts, name
        settings = _load_as_seen(clean_env, CLUSTER_CONFIG, env)
        for variable, value in env.items():
            if (dotted := _setting_of(variable)) is not None and variable != "METERD_API_KEYS":
                assert str(_setting(settings, dotted)) == value, f"{name}: {variable} did not take effect"
        _same_services(load_settings(CLUSTER_CONFIG), settings, f"compose service {name}")


def test_each_kubernetes_container_gets_valid_settings(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "meterd.yaml"
    config.write_text(_configmap_text())
    alone = load_settings(config)
    for container in _k8s_containers():
        env = _k8s_env(container)
        assert env.get("METERD_CONFIG") == "/etc/meterd/meterd.yaml", container.where
        mounts = {m["mountPath"]: m for m in container.spec.get("volumeMounts", [])}
        assert mounts["/etc/meterd/meterd.yaml"]["subPath"] == "meterd.yaml", container.where
        volumes = {v["name"]: v for v in container.pod["volumes"]}
        assert volumes[mounts["/etc/meterd/meterd.yaml"]["name"]]["configMap"]["name"] == "meterd-config"
        settings = _load_as_seen(clean_env, config, env)
        if (
            alone.kafka.ssl_ca_location is not None and container.spec["args"][0] != "worker"
        ):  # the worker never reaches Kafka
            ca = alone.kafka.ssl_ca_location.parent.as_posix()
            assert ca in mounts, f"{container.where}: kafka.ssl_ca_location is not mounted"
        _same_services(alone, settings, container.where)


def _same_services(alone: Settings, seen: Settings, where: str) -> None:
    """A DSN given again with its password (METERD_STORAGE__*) points where the config file does."""
    for dotted in ("storage.event_store", "storage.metadata_url"):
        file, env = urlparse(_setting(alone, dotted)), urlparse(_setting(seen, dotted))
        assert file.password is None, f"{dotted} in the config file holds a password"
        same = (file.scheme, file.hostname, file.port, file.path, file.username)
        assert same == (env.scheme, env.hostname, env.port, env.path, env.username), f"{where}: {dotted} differs"


def test_docs_operations_names_only_real_settings() -> None:
    names = set(_documented_settings())
    assert {"kafka.partitions", "ingest.dedup_window", "notifications.worker"} <= names
    wrong = [name for name in sorted(names) if _setting_of("METERD_" + name.replace(".", "__").upper()) is None]
    assert not wrong, f"docs/operations.md names settings that do not exist: {wrong}"


# -- (c) probes, healthchecks and scrapes use the ports the commands listen on ------------------------------------


def _listens(invocation: Invocation, settings: Settings) -> tuple[str, int]:
    """(host, port) a process binds: the API port of `serve`, the health port of `sink` and `worker`."""
    if invocation.path == ["serve"]:
        return invocation.values["host"] or settings.server.host, invocation.values["port"] or settings.server.port
    return invocation.values["health_host"], invocation.values["health_port"]


def test_compose_healthchecks_and_ports_match_the_flags(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(CLUSTER_CONFIG)
    checked = 0
    for name, service in _compose_services().items():
        invocation = _parse([str(a) for a in service["command"]])
        if invocation.path == ["migrate"]:
            assert "healthcheck" not in service and service.get("restart") == "no", name
            continue
        host, port = _listens(invocation, settings)
        assert host not in LOOPBACK, f"{name}: binds {host}, unreachable from other containers"
        test = " ".join(str(part) for part in service["healthcheck"]["test"])
        urls = re.findall(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/\w+)", test)
        assert urls, f"{name}: the healthcheck requests no URL"
        for probe_port, path in urls:
            assert int(probe_port) == port, f"{name}: healthcheck on {probe_port}, process on {port}"
            assert path in SERVED[invocation.path[0]], f"{name}: {path} is not served"
        for mapping in service.get("ports", []):
            assert int(str(mapping).rsplit(":", 1)[1]) == port, f"{name}: publishes {mapping}, process on {port}"
        checked += 1
    assert checked == 5


def _container_port(container: Container, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.spec.get("ports", [])}
    assert port in named, f"{container.where}: no port named {port}"
    return int(named[port])


def test_kubernetes_probes_ports_and_scrapes_match_the_flags(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "meterd.yaml"
    config.write_text(_configmap_text())
    settings = load_settings(config)
    probed = set()
    for container in _k8s_containers():
        invocation = _parse([str(a) for a in container.spec["args"]])
        if container.init or invocation.path == ["migrate"]:
            assert not any(k.endswith("Probe") for k in container.spec), container.where
            continue
        kind = invocation.path[0]
        host, port = _listens(invocation, settings)
        assert host not in LOOPBACK, f"{container.where}: binds {host}; the kubelet probes the pod's address"
        assert port in [p["containerPort"] for p in container.spec["ports"]], container.where
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in container.spec:
                get = container.spec[probe]["httpGet"]
                assert _container_port(container, get["port"]) == port, f"{container.where}: {probe} port"
                assert get["path"] in SERVED[kind], f"{container.where}: {probe} {get['path']} is not served"
                probed.add((kind, probe, get["path"]))
        if container.annotations.get("prometheus.io/scrape") == "true":
            assert int(container.annotations["prometheus.io/port"]) == port, f"{container.where}: scrape port"
            assert container.annotations.get("prometheus.io/path", "/metrics") == "/metrics"
    assert {
        ("serve", "readinessProbe", "/readyz"),
        ("serve", "livenessProbe", "/healthz"),
        ("sink", "livenessProbe", "/healthz"),
        ("worker", "livenessProbe", "/healthz"),
    } <= probed


def test_the_api_service_reaches_the_api_port(clean_env: pytest.MonkeyPatch) -> None:
    service = _k8s_one("Service", "meterd-api")
    deployment = _k8s_one("Deployment", "meterd-api")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (api,) = [c for c in _k8s_containers() if c.where.startswith("Deployment meterd-api ") and not c.init]
    port = _parse([str(a) for a in api.spec["args"]]).values["port"]
    for entry in service["spec"]["ports"]:
        assert _container_port(api, entry["targetPort"]) == port


def test_sinks_do_not_outnumber_partitions(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    compose_sinks = [s for s in _compose_services().values() if str(s["command"][0]) == "sink"]
    assert len(compose_sinks) <= load_settings(CLUSTER_CONFIG).kafka.partitions
    config = tmp_path / "meterd.yaml"
    config.write_text(_configmap_text())
    assert _k8s_one("Deployment", "meterd-sink")["spec"]["replicas"] <= load_settings(config).kafka.partitions


# -- (d) `meterd config validate` accepts the files ----------------------------------------------------------------


def test_config_validate_accepts_the_compose_config(clean_env: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(cli, ["--config", str(CLUSTER_CONFIG), "config", "validate"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: cluster mode settings are valid")


def test_config_validate_accepts_the_configmap_with_the_secret(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "meterd.yaml"
    config.write_text(_configmap_text())
    result = CliRunner().invoke(cli, ["--config", str(config), "config", "validate"], env=_secret_env())
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: cluster mode settings are valid")


# -- the alerting rules name real metrics --------------------------------------------------------------------------


_METRIC = re.compile(r"\b(Counter|Gauge|Histogram|Summary)(?:MetricFamily)?\(\s*\"(meterd_\w+)\"")
_SUFFIXES = {"Counter": ["_total"], "Histogram": ["_bucket", "_sum", "_count"], "Summary": ["_sum", "_count"]}


def _metric_names(families: bool = False) -> set[str]:
    """Every meterd_* series the code defines, as Prometheus sees it (a counter gains _total, a histogram
    _bucket, _sum and _count), read from the constructors in src/meterd; with `families`, also the names the
    code gives them."""
    names = set()
    for path in (ROOT / "src" / "meterd").rglob("*.py"):
        for kind, name in _METRIC.findall(path.read_text()):
            names.update(name + suffix for suffix in _SUFFIXES.get(kind, [""]))
            names.update([name] if families else [])
    assert {"meterd_sink_lag_events", "meterd_http_requests_total"} <= names  # the pattern still finds them
    return names


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _documents(ALERTS)[0]["groups"] for rule in group["rules"]]


def test_alerts_name_exported_metrics_and_real_routes() -> None:
    exported = _metric_names()
    routes = {str(route.path) for route in [*events.routes, *system.routes]}
    rules = _alert_rules()
    assert len(rules) >= 5
    for rule in rules:
        used = set(re.findall(r"\bmeterd_\w+", str(rule["expr"])))
        assert used, f"{rule['alert']} names no meterd metric"
        assert used <= exported, f"{rule['alert']}: {sorted(used - exported)} are not exported"
        for route in re.findall(r'route="([^"]+)"', str(rule["expr"])):
            assert route in routes, f"{rule['alert']}: no route {route}"


def test_docs_operations_names_only_exported_metrics() -> None:
    mentioned = set(re.findall(r"\bmeterd_[a-z_]+[a-z]", OPERATIONS.read_text()))
    assert len(mentioned) >= 8
    unknown = mentioned - _metric_names(families=True)
    assert not unknown, f"docs/operations.md names metrics the code does not define: {sorted(unknown)}"


def _all_options(command: click.Command) -> set[str]:
    found = {opt for p in command.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}
    for sub in getattr(command, "commands", {}).values():
        found |= _all_options(sub)
    return found


def test_docs_operations_names_only_real_flags() -> None:
    flags = set(re.findall(r"`(--[a-z][a-z-]*)[ =`]", OPERATIONS.read_text()))
    assert {"--health-port", "--health-host"} <= flags
    assert flags <= _all_options(cli), f"docs/operations.md names flags no command has: {flags - _all_options(cli)}"


def test_compose_starts_meterd_after_migrate_and_migrate_after_the_services() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for target in service.get("depends_on", {}):
            assert target in services and target != name, f"{name} depends on {target}"
    for name in _compose_services():
        depends = services[name].get("depends_on", {})
        if name == "migrate":
            assert {"kafka", "postgres", "clickhouse"} <= set(depends)
            assert all(d["condition"] == "service_healthy" for d in depends.values())
        else:
            assert depends == {"migrate": {"condition": "service_completed_successfully"}}, name
