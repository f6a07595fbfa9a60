"""The sample Kubernetes manifests under deploy/kubernetes, read against the code they deploy:
the CLI's subcommands and flags, the settings' environment variables, the app's routes, the
Dockerfile's user, and the config's shutdown and journal settings.

No cluster is needed: every YAML document is parsed with PyYAML and checked here.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml

from proxy import cli
from proxy.app import create_app
from proxy.settings import (
    MULTIPROCESS_ENVIRONMENT_VARIABLE,
    EnvironmentSettings,
    ProxyConfig,
    load_settings,
)
from tests.support.databases import sqlite_url
from tests.support.servers import serve_in_thread
from tests.test_docker_files import (
    DOCKERFILE,
    ROOT,
    ROOT_USERS,
    _dockerfile_instructions,
    _final_stage,
)

MANIFESTS = ROOT / "deploy" / "kubernetes"
CONSOLE_SCRIPT = "metering-proxy"
CONFIG_FILE_KEY = "proxy.toml"
SERVING_WORKLOADS = {"Deployment", "StatefulSet"}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every YAML document under deploy/kubernetes."""
    documents = []
    for path in sorted(MANIFESTS.glob("*.y*ml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                documents.append((path.name, document))
    return documents


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in _documents() if document["kind"] == kind]


def _one(kind: str) -> dict[str, Any]:
    found = _of_kind(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _proxy_workload() -> dict[str, Any]:
    """The Deployment or StatefulSet that serves the proxy."""
    found = [document for _, document in _documents() if document["kind"] in SERVING_WORKLOADS]
    assert len(found) == 1, f"expected one of {sorted(SERVING_WORKLOADS)}, found {len(found)}"
    return found[0]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _pod_spec(workload)["containers"]
    assert len(containers) == 1, "one container per pod: the proxy"
    return containers[0]


def _argv(container: dict[str, Any]) -> list[str]:
    """The container's full command line, with the image's ENTRYPOINT when `command` is unset."""
    entrypoint = dict(_final_stage(_dockerfile_instructions(DOCKERFILE.read_text())))
    command = container.get("command") or yaml.safe_load(entrypoint["ENTRYPOINT"])
    return [str(part) for part in [*command, *container.get("args", [])]]


def _parse_cli(container: dict[str, Any]) -> tuple[argparse.Namespace, list[str]]:
    """The container's arguments as `metering-proxy` parses them; the test fails if it refuses."""
    argv = _argv(container)
    assert argv[0] == CONSOLE_SCRIPT, argv
    try:
        return cli._parser().parse_args(argv[1:]), argv
    except SystemExit:
        pytest.fail(f"metering-proxy refuses the command line {argv}")


def _config_map_config() -> ProxyConfig:
    text = _one("ConfigMap")["data"][CONFIG_FILE_KEY]
    return ProxyConfig.model_validate(tomllib.loads(text))


def _env_names(container: dict[str, Any]) -> list[str]:
    return [variable["name"] for variable in container.get("env", [])]


def _secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Variable name -> (secret name, key), for every variable taken from a Secret."""
    refs = {}
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            refs[variable["name"]] = (ref["name"], ref["key"])
    return refs


def _variables_named_by(config: ProxyConfig) -> set[str]:
    """The environment variables the config file tells the proxy to read."""
    named = {upstream.api_key_env for upstream in config.upstreams if upstream.api_key_env}
    named |= {key.key_env for team in config.teams for key in team.keys}
    named |= {sink.secret_env for sink in config.alert_sinks if sink.secret_env}
    return named


def _known_variables(config: ProxyConfig) -> set[str]:
    settings = {f"METERING_{field.upper()}" for field in EnvironmentSettings.model_fields}
    return settings | {MULTIPROCESS_ENVIRONMENT_VARIABLE} | _variables_named_by(config)


def _mount_for(container: dict[str, Any], path: PurePosixPath) -> dict[str, Any]:
    """The volume mount `path` lies under (the deepest one)."""
    mounts = [
        mount
        for mount in container.get("volumeMounts", [])
        if path.is_relative_to(PurePosixPath(mount["mountPath"]))
    ]
    assert mounts, f"{path} is on no volume"
    return max(mounts, key=lambda mount: len(mount["mountPath"]))


def _cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _container_environ(container: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """The environment the container gets, secrets as placeholders, the database a SQLite file."""
    environ = {name: f"placeholder-{name.lower()}" for name in _env_names(container)}
    environ["METERING_DATABASE_URL"] = sqlite_url(tmp_path)
    return environ


@pytest.fixture
def proxy_as_deployed(tmp_path: Path) -> Iterator[str]:
    """The proxy as the manifests configure it (journal and database moved to tmp_path)."""
    container = _container(_proxy_workload())
    config_path = tmp_path / CONFIG_FILE_KEY
    config_path.write_text(_one("ConfigMap")["data"][CONFIG_FILE_KEY])
    environ = {**_container_environ(container, tmp_path), "METERING_CONFIG": str(config_path)}
    settings = load_settings(environ)
    ledger = settings.proxy.ledger.model_copy(update={"journal_dir": tmp_path / "journal"})
    proxy_config = settings.proxy.model_copy(update={"ledger": ledger})
    app = create_app(settings.model_copy(update={"proxy": proxy_config}))
    with serve_in_thread(app) as url:
        yield url


@pytest.mark.parametrize(
    ("file_name", "document"),
    _documents(),
    ids=[f"{name}:{doc.get('kind')}" for name, doc in _documents()],
)
def test_every_document_names_its_api_version_kind_and_name(
    file_name: str, document: dict[str, Any]
) -> None:
    assert isinstance(document.get("apiVersion"), str) and document["apiVersion"], file_name
    assert isinstance(document.get("kind"), str) and document["kind"], file_name
    assert isinstance(document.get("metadata", {}).get("name"), str), file_name


def test_manifests_cover_config_secret_workload_service_and_migration() -> None:
    kinds = {document["kind"] for _, document in _documents()}

    assert {"ConfigMap", "Secret", "Service", "Job"} <= kinds
    assert kinds & SERVING_WORKLOADS


def test_every_namespaced_document_is_in_the_same_namespace() -> None:
    namespaces = {
        document["metadata"].get("namespace")
        for _, document in _documents()
        if document["kind"] != "Namespace"
    }

    assert len(namespaces) == 1, namespaces
    assert None not in namespaces


def test_proxy_runs_metering_proxy_serve_with_flags_the_cli_accepts() -> None:
    container = _container(_proxy_workload())

    arguments, argv = _parse_cli(container)

    assert arguments.handler is cli._serve, argv
    assert arguments.host == "0.0.0.0"  # reachable from the Service, not only from the pod
    assert arguments.config is not None


def test_proxy_listens_on_the_port_the_pod_declares() -> None:
    container = _container(_proxy_workload())
    arguments, _ = _parse_cli(container)
    declared = {port["containerPort"] for port in container["ports"]}

    assert arguments.port in declared


def test_proxy_runs_one_worker_per_cpu_of_its_limit() -> None:
    container = _container(_proxy_workload())
    arguments, _ = _parse_cli(container)
    limit = _cpu_cores(container["resources"]["limits"]["cpu"])

    assert _cpu_cores(container["resources"]["requests"]["cpu"]) == limit
    assert arguments.workers == limit


def test_config_flag_points_at_the_config_map_key() -> None:
    workload = _proxy_workload()
    container = _container(workload)
    arguments, _ = _parse_cli(container)
    config_path = PurePosixPath(arguments.config)
    mount = _mount_for(container, config_path)
    volume = next(v for v in _pod_spec(workload)["volumes"] if v["name"] == mount["name"])

    assert volume["configMap"]["name"] == _one("ConfigMap")["metadata"]["name"]
    assert config_path.relative_to(mount["mountPath"]) == PurePosixPath(CONFIG_FILE_KEY)


def test_config_map_holds_a_config_the_proxy_accepts() -> None:
    config = _config_map_config()

    assert config.upstreams, "one upstream at least"


def test_migration_job_runs_metering_proxy_migrate_on_the_proxys_database() -> None:
    job = _one("Job")
    container = _container(job)

    arguments, argv = _parse_cli(container)

    assert arguments.handler is cli._migrate, argv
    assert _pod_spec(job)["restartPolicy"] in {"Never", "OnFailure"}
    database = "METERING_DATABASE_URL"
    assert (
        _secret_refs(container)[database] == _secret_refs(_container(_proxy_workload()))[database]
    )


@pytest.mark.parametrize("kind", ["proxy", "migration"])
def test_every_environment_variable_is_one_the_proxy_reads(kind: str) -> None:
    workload = _proxy_workload() if kind == "proxy" else _one("Job")
    known = _known_variables(_config_map_config())

    unknown = set(_env_names(_container(workload))) - known

    assert not unknown, f"variables the proxy never reads: {sorted(unknown)}"


def test_proxy_gets_the_database_and_every_variable_its_config_names() -> None:
    names = set(_env_names(_container(_proxy_workload())))

    assert "METERING_DATABASE_URL" in names  # else each pod keeps a SQLite ledger of its own
    assert _variables_named_by(_config_map_config()) <= names


def test_secret_references_name_keys_of_the_example_secret() -> None:
    secret = _one("Secret")
    provided = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    for workload in (_proxy_workload(), _one("Job")):
        for name, key in _secret_refs(_container(workload)).values():
            assert name == secret["metadata"]["name"]
            assert key in provided, key


def test_the_config_and_the_environment_load_as_settings(tmp_path: Path) -> None:
    container = _container(_proxy_workload())
    config_path = tmp_path / CONFIG_FILE_KEY
    config_path.write_text(_one("ConfigMap")["data"][CONFIG_FILE_KEY])
    environ = {**_container_environ(container, tmp_path), "METERING_CONFIG": str(config_path)}

    settings = load_settings(environ)  # ConfigError if a variable the config names is missing

    assert settings.environment.admin_key is not None  # /usage/* and /admin/* are closed


def test_probes_and_scrape_path_are_routes_that_answer(proxy_as_deployed: str) -> None:
    workload = _proxy_workload()
    container = _container(workload)
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    paths = {
        "readiness": container["readinessProbe"]["httpGet"]["path"],
        "liveness": container["livenessProbe"]["httpGet"]["path"],
        "startup": container["startupProbe"]["httpGet"]["path"],
        "metrics": annotations["prometheus.io/path"],
    }

    answers = {what: httpx.get(proxy_as_deployed + path) for what, path in paths.items()}

    assert {what: answer.status_code for what, answer in answers.items()} == dict.fromkeys(
        paths, 200
    )
    assert paths["readiness"] != paths["liveness"]  # readiness also checks the journal
    assert "llm_proxy_requests_total" in answers["metrics"].text


def test_probes_target_the_proxys_port() -> None:
    container = _container(_proxy_workload())
    ports = {port["name"] for port in container["ports"]} | {
        port["containerPort"] for port in container["ports"]
    }

    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports, probe


def test_pods_are_annotated_for_prometheus_on_the_proxys_port() -> None:
    workload = _proxy_workload()
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    arguments, _ = _parse_cli(_container(workload))

    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == arguments.port


@pytest.mark.parametrize("kind", ["proxy", "migration"])
def test_containers_run_as_the_images_non_root_user(kind: str) -> None:
    workload = _proxy_workload() if kind == "proxy" else _one("Job")
    pod = _pod_spec(workload).get("securityContext", {})
    container = _container(workload)
    effective = {**pod, **container.get("securityContext", {})}
    image_user = dict(_final_stage(_dockerfile_instructions(DOCKERFILE.read_text())))["USER"]

    assert effective.get("runAsNonRoot") is True
    assert str(effective.get("runAsUser")) not in ROOT_USERS
    assert str(effective["runAsUser"]) == image_user.split(":", 1)[0]
    assert effective.get("allowPrivilegeEscalation") is False


def test_a_read_only_root_leaves_tmp_writable() -> None:
    container = _container(_proxy_workload())
    if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
        pytest.skip("the root filesystem is writable")

    mount = _mount_for(container, PurePosixPath("/tmp/metering-metrics"))

    assert not mount.get("readOnly", False)


def test_journal_is_on_a_volume_that_outlives_the_pod() -> None:
    workload = _proxy_workload()
    journal_dir = _config_map_config().ledger.journal_dir

    assert journal_dir.is_absolute(), "a relative journal_dir depends on the working directory"
    mount = _mount_for(_container(workload), PurePosixPath(journal_dir))
    assert not mount.get("readOnly", False)
    if workload["kind"] == "StatefulSet":
        claims = {claim["metadata"]["name"] for claim in workload["spec"]["volumeClaimTemplates"]}
        assert mount["name"] in claims
    else:
        volume = next(v for v in _pod_spec(workload)["volumes"] if v["name"] == mount["name"])
        assert "persistentVolumeClaim" in volume or "emptyDir" in volume


def test_termination_grace_outlasts_the_proxys_own_shutdown() -> None:
    workload = _proxy_workload()
    config = _config_map_config()
    pre_stop = _container(workload).get("lifecycle", {}).get("preStop", {})
    command = pre_stop.get("exec", {}).get("command", [])
    pre_stop_seconds = float(command[1]) if command[:1] == ["sleep"] else 0.0
    shutdown = pre_stop_seconds + config.shutdown_grace_seconds + config.ledger.drain_seconds

    assert _pod_spec(workload)["terminationGracePeriodSeconds"] > shutdown


def test_service_sends_traffic_to_the_proxys_named_port() -> None:
    workload = _proxy_workload()
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    port_names = {port["name"] for port in _container(workload)["ports"]}

    for service in _of_kind("Service"):
        selector = service["spec"]["selector"]
        assert selector.items() <= pod_labels.items(), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names


def test_statefulset_names_a_headless_service() -> None:
    workload = _proxy_workload()
    if workload["kind"] != "StatefulSet":
        pytest.skip("not a StatefulSet")
    headless = {
        service["metadata"]["name"]
        for service in _of_kind("Service")
        if service["spec"].get("clusterIP") == "None"
    }

    assert workload["spec"]["serviceName"] in headless
