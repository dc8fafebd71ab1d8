"""Static checks of how the OpenAI-compatible gateway (``qwen3-asr serve-openai``) is deployed: the images that
carry it, docker/serve.sh running it, the compose services and the Kubernetes pod, Service, NetworkPolicy and
PodMonitor around it.

Linting (hadolint, yamllint) and strict schema validation of the rendered overlays run over these same files in
tests/test_deploy_static.py; the tools come from scripts/install_lint_tools.sh and a missing one fails.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest
import yaml

from tests.test_deploy_static import DOCKER, DOCKERFILES, K8S, OVERLAYS, REPO, kustomize, run

GATEWAY_PORT = 8080
TRITON_HTTP_PORT = 8000
# Triton's own gRPC endpoint inside a container (loopback); 8001, the clients' port, is the gRPC guard.
TRITON_INTERNAL_GRPC_PORT = 8011
GATEWAY_SITE = "/opt/qwen3-asr/gateway"
# What the gateway's RUN installs in the gpu image besides the "gateway" extra: the project's own runtime
# dependencies that the gRPC client under it imports (its audio stack comes from the models' site).
GPU_CLIENT_DEPENDENCIES = {"tritonclient", "tqdm", "numpy"}
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?(.*)$")


# ----------------------------------------------------------------------------- helpers
def _pyproject_list(key: str) -> list[str]:
    """The quoted strings of a top-level ``key = [...]`` list of pyproject.toml (comments skipped)."""
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(rf"^{re.escape(key)} = \[\n(.*?)^\]", text, re.M | re.S)
    assert match, f"pyproject.toml has no list {key}"
    return re.findall(r'^\s*"([^"]+)",?\s*$', match.group(1), re.M)


def _requirements(specs: list[str]) -> dict[str, str]:
    """name -> extras + version spec, e.g. {"tritonclient": "[grpc]==2.73.0", "numpy": ">=1.26,<2"}."""
    parsed = {}
    for spec in specs:
        match = REQUIREMENT.match(spec)
        assert match, spec
        name, extras, version = match.groups()
        parsed[name.lower().replace("_", "-")] = (extras or "") + version
    return parsed


def _package_dirs() -> set[str]:
    """The source folders of pyproject's [tool.setuptools.package-dir] (gateway/ among them)."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-dir]\n", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r'^"[^"]+" = "([^"]+)"', section, re.M))


def _stages(dockerfile: str) -> dict[str, list[str]]:
    """Stage name -> its logical lines (continuations joined)."""
    lines = (DOCKER / dockerfile).read_text().replace("\\\n", " ").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    return {lines[a].split()[-1]: lines[a:b] for a, b in zip(starts, [*starts[1:], len(lines)])}


def _walk(node, path=()):
    """Every (path, key, value) of a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, index))


# ----------------------------------------------------------------------------- images
def test_gpu_image_installs_the_gateway_at_the_project_pins():
    gateway_extra = _requirements(_pyproject_list("gateway"))
    dependencies = _requirements(_pyproject_list("dependencies"))
    assert {"starlette", "uvicorn", "python-multipart", "prometheus-client"} <= gateway_extra.keys()
    server = _stages("Dockerfile.gpu")["server"]
    (line,) = [ln for ln in server if ln.startswith("RUN ") and '--target "$QWEN3_ASR_GATEWAY_SITE"' in ln]
    words = shlex.split(line.split("&&")[0])
    assert words[:5] == ["RUN", "python3", "-m", "pip", "install"]
    # Resolved by pip into a folder of its own: no --no-deps (the gateway's dependencies come with it).
    assert "--no-deps" not in words
    installed = _requirements([w for w in words[5:] if not w.startswith("-") and w != "$QWEN3_ASR_GATEWAY_SITE"])
    assert installed.keys() == gateway_extra.keys() | GPU_CLIENT_DEPENDENCIES
    for name, spec in installed.items():
        expected = gateway_extra.get(name, dependencies.get(name))
        assert spec == expected, f"{name}: Dockerfile.gpu {spec}, pyproject.toml {expected}"
    assert all(spec.split("]")[-1].startswith("==") for spec in gateway_extra.values()), "extra not pinned"
    assert f"QWEN3_ASR_GATEWAY_SITE={GATEWAY_SITE}" in " ".join(server)
    assert f'GATEWAY_SITE="${{QWEN3_ASR_GATEWAY_SITE:-{GATEWAY_SITE}}}"' in (DOCKER / "serve.sh").read_text()


def test_cpu_server_image_installs_the_gateway_extra():
    stages = _stages("Dockerfile.cpu")
    (extras,) = [ln for ln in stages["server"] if ln.startswith("ENV EXTRAS=")]
    assert "gateway" in extras.split("=", 1)[1].split(","), extras
    assert "serve" in extras.split("=", 1)[1].split(","), extras


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_carry_every_package_folder_and_expose_the_gateway(dockerfile):
    stages = _stages(dockerfile)
    base = stages["base" if "base" in stages else "server"]
    copied = {ln.split()[1] for ln in base if ln.startswith("COPY ") and ln.split()[2] == f"./{ln.split()[1]}"}
    assert "gateway" in copied
    assert _package_dirs() <= copied, f"{dockerfile} misses {_package_dirs() - copied}"
    exposed = [ln.split()[1:] for ln in stages["server"] if ln.startswith("EXPOSE ")]
    assert exposed == [["8000", "8001", "8002", str(GATEWAY_PORT)]]
    for ignore in DOCKER.glob("*.dockerignore"):
        assert not any(line.strip().strip("/") == "gateway" for line in ignore.read_text().splitlines())


# ----------------------------------------------------------------------------- docker/serve.sh
def _serve(args: list[str], target: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(QWEN3_ASR_TARGET=target, MODEL_REPOSITORY="/nonexistent-repository", **env)
    return run([str(DOCKER / "serve.sh"), *args], env=environ)


def test_serve_runs_a_command_in_the_gpu_gateway_environment(tmp_path):
    """gpu: the gateway's site first on PYTHONPATH, then the project's; the project's console scripts on PATH;
    no model repository needed."""
    site, gateway_site = tmp_path / "site", tmp_path / "gateway"
    (site / "bin").mkdir(parents=True)
    gateway_site.mkdir()
    (site / "shadowed.py").write_text("WHERE = 'site'\n")
    (gateway_site / "shadowed.py").write_text("WHERE = 'gateway'\n")
    (site / "project_only.py").write_text("WHERE = 'site'\n")
    script = site / "bin" / "qwen3-asr"
    script.write_text(
        "#!/usr/bin/env python3\nimport sys, shadowed, project_only\n"
        "print(shadowed.WHERE, project_only.WHERE, *sys.argv[1:])\n"
    )
    script.chmod(0o755)
    args = ["qwen3-asr", "serve-openai", "--triton-url", "127.0.0.1:8001", "--port", "8080"]
    result = _serve(args, "gpu", QWEN3_ASR_SITE=str(site), QWEN3_ASR_GATEWAY_SITE=str(gateway_site))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["gateway", "site", *args[1:]]


def test_serve_runs_a_command_in_the_cpu_project_environment():
    result = _serve(["sh", "-c", 'command -v qwen3-asr; command -v python; echo "$PYTHONPATH"'], "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(REPO / ".venv/bin/qwen3-asr"), str(REPO / ".venv/bin/python"), ""]
    exit_code = _serve(["sh", "-c", "exit 7"], "cpu")
    assert exit_code.returncode == 7, "the command's exit status is the container's"


def test_serve_refuses_a_command_for_an_unknown_target():
    result = _serve(["true"], "tpu")
    assert result.returncode == 2 and "cpu or gpu" in result.stderr


# ----------------------------------------------------------------------------- compose
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]


@pytest.mark.parametrize("target", ("gpu", "cpu"))
def test_compose_gateway_service(compose, target):
    gateway, triton = compose[f"gateway-{target}"], compose[f"triton-{target}"]
    # The server's image, run by docker/serve.sh with the gateway's command line, reaching Triton's gRPC port.
    assert gateway["image"] == triton["image"] and gateway["build"] == triton["build"]
    assert "entrypoint" not in gateway
    assert gateway["command"] == [
        "qwen3-asr", "serve-openai", "--triton-url", f"triton-{target}:8001",
        "--host", "0.0.0.0", "--port", str(GATEWAY_PORT),
    ]  # fmt: skip
    assert "127.0.0.1:8001:8001" in triton["ports"]
    assert gateway["depends_on"] == {f"triton-{target}": {"condition": "service_healthy"}}
    assert "test" in triton["healthcheck"]
    assert gateway["ports"] == [f"127.0.0.1:{GATEWAY_PORT}:{GATEWAY_PORT}"]
    assert gateway["profiles"] == [target] and gateway["restart"] == "unless-stopped"
    # Hardened like the server: read-only root, unprivileged, no capabilities, a tmpfs for spooled uploads.
    assert gateway["read_only"] is True and gateway["user"] == "10001:10001"
    assert gateway["cap_drop"] == ["ALL"] and gateway["security_opt"] == ["no-new-privileges:true"]
    assert gateway["tmpfs"] == ["/tmp"]
    check = gateway["healthcheck"]["test"]
    assert check[:2] == ["CMD", "python3"] and f"'http://127.0.0.1:{GATEWAY_PORT}/health'" in check[-1]
    # The API key is passed through from the calling shell, never written here.
    env = gateway["environment"]
    assert "QWEN3_ASR_API_KEY" in env and env["QWEN3_ASR_API_KEY"] is None
    # No GPU for the gateway, even from an NGC image that asks for all of them.
    assert "deploy" not in gateway and "shm_size" not in gateway and "volumes" not in gateway
    assert env.get("NVIDIA_VISIBLE_DEVICES") == ("void" if target == "gpu" else None)


def test_compose_publishes_no_triton_http_port_and_one_gateway_per_profile(compose):
    published = {}
    for name, service in compose.items():
        for port in service.get("ports", []):
            host_ip, host_port, container_port = port.split(":")
            assert host_ip == "127.0.0.1", f"{name}: {port}"
            assert int(container_port) != TRITON_HTTP_PORT and int(host_port) != TRITON_HTTP_PORT, f"{name}: {port}"
            for profile in service["profiles"]:
                assert (profile, host_port) not in published, f"{name} and {published[profile, host_port]}: {port}"
                published[profile, host_port] = name
    assert {name for (_, port), name in published.items() if port == str(GATEWAY_PORT)} == {
        "gateway-gpu",
        "gateway-cpu",
    }


# ----------------------------------------------------------------------------- Kubernetes
@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    text = kustomize(K8S / "overlays" / request.param)
    return request.param, {d["kind"]: d for d in yaml.safe_load_all(text) if d}


def _containers(docs: dict) -> dict[str, dict]:
    return {c["name"]: c for c in docs["Deployment"]["spec"]["template"]["spec"]["containers"]}


def test_gateway_container_runs_beside_triton(rendered):
    target, docs = rendered
    containers = _containers(docs)
    gateway, triton = containers["gateway"], containers["triton"]
    assert gateway["image"] == triton["image"] and gateway["image"].startswith(f"qwen3-asr-triton-{target}:")
    # args, not command: the image's entry point (docker/serve.sh) runs them in the gateway's environment.
    assert "command" not in gateway
    # The gateway is trusted: it reaches Triton's own gRPC endpoint on the pod's loopback, not the guard.
    assert gateway["args"] == [
        "qwen3-asr", "serve-openai", "--triton-url", f"127.0.0.1:{TRITON_INTERNAL_GRPC_PORT}",
        "--host", "0.0.0.0", "--port", str(GATEWAY_PORT),
    ]  # fmt: skip
    assert gateway["ports"] == [{"name": "openai", "containerPort": GATEWAY_PORT, "protocol": "TCP"}]
    ready, alive = gateway["readinessProbe"], gateway["livenessProbe"]
    assert ready["httpGet"] == {"path": "/health", "port": "openai"}
    # Liveness must not follow Triton's readiness (a restarting Triton would restart the gateway too).
    assert alive["httpGet"] == {"path": "/metrics", "port": "openai"}
    assert "startupProbe" not in gateway


def test_gateway_container_is_hardened_and_bounded(rendered):
    target, docs = rendered
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    gateway = _containers(docs)["gateway"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert gateway["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    resources = gateway["resources"]
    assert resources["requests"].keys() == resources["limits"].keys() == {"cpu", "memory"}
    (mount,) = gateway["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["sizeLimit"]
    env = {e["name"]: e for e in gateway["env"]}
    assert env["QWEN3_ASR_API_KEY"] == {
        "name": "QWEN3_ASR_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "qwen3-asr-gateway", "key": "api-key", "optional": True}},
    }
    if target == "gpu":
        assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "void"
    else:
        assert "NVIDIA_VISIBLE_DEVICES" not in env


def test_service_networkpolicy_and_podmonitor_serve_the_gateway(rendered):
    _, docs = rendered
    ports = {p["name"]: p for p in docs["Service"]["spec"]["ports"]}
    assert ports["openai"] == {
        "name": "openai",
        "port": GATEWAY_PORT,
        "targetPort": "openai",
        "protocol": "TCP",
        "appProtocol": "http",
    }
    rules = docs["NetworkPolicy"]["spec"]["ingress"]
    by_source = {}
    for rule in rules:
        (source,) = rule["from"]
        key = "clients" if source.get("podSelector") == {"matchLabels": {"qwen3-asr/client": "true"}} else None
        if source.get("namespaceSelector") == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}:
            key = "monitoring"
        assert key and key not in by_source, rule
        by_source[key] = {p["port"] for p in rule["ports"]}
    assert by_source == {"clients": {"grpc", "openai"}, "monitoring": {"metrics", "openai"}}
    endpoints = {(e["port"], e["path"]) for e in docs["PodMonitor"]["spec"]["podMetricsEndpoints"]}
    assert endpoints == {("metrics", "/metrics"), ("openai", "/metrics")}


def test_no_manifest_opens_tritons_http_port(rendered):
    _, docs = rendered
    names = {p["name"]: p["containerPort"] for c in _containers(docs).values() for p in c["ports"]}
    for hidden in (TRITON_HTTP_PORT, TRITON_INTERNAL_GRPC_PORT):
        assert hidden not in names.values()
    for kind, doc in docs.items():
        for path, key, value in _walk(doc):
            if key in {"port", "containerPort", "targetPort", "hostPort"}:
                resolved = names.get(value, value)
                where = f"{kind} {'.'.join(map(str, path))}"
                assert resolved not in (TRITON_HTTP_PORT, TRITON_INTERNAL_GRPC_PORT) and value != "http", where


def test_both_targets_put_the_grpc_guard_on_the_clients_port():
    """docker/serve.sh: Triton's own gRPC endpoint on loopback, the guard on the port that faces the network."""
    text = (DOCKER / "serve.sh").read_text()
    assert f'INTERNAL_GRPC_PORT="${{TRITON_INTERNAL_GRPC_PORT:-{TRITON_INTERNAL_GRPC_PORT}}}"' in text
    # cpu: serve_cpu.sh runs the guard by default; it must not be turned off, and gets the internal port.
    assert "--no-grpc-guard" not in text
    assert '--triton-grpc-port "$INTERNAL_GRPC_PORT"' in text
    # gpu: tritonserver's gRPC binds loopback; the guard listens on ADDRESS:GRPC_PORT and forwards to it.
    gpu = text.split("  gpu)\n", 1)[1]
    assert '--grpc-address=127.0.0.1 --grpc-port="$INTERNAL_GRPC_PORT"' in gpu
    assert '--grpc-address="$ADDRESS"' not in gpu
    guard = re.search(r"serve-grpc \\\n(.*?)&\n", gpu, re.S)
    assert guard, "the gpu branch starts no gRPC guard"
    args = shlex.split(guard.group(1).replace("\\\n", " "))
    assert args == [
        "--triton-url", "127.0.0.1:$INTERNAL_GRPC_PORT", "--model-repository", "$MODEL_REPOSITORY",
        "--host", "$ADDRESS", "--port", "$GRPC_PORT",
    ]  # fmt: skip
    assert 'wait -n "$watcher" "$guard"' in gpu, "a dead guard must end the container"
    cpu_script = (REPO / "scripts" / "serve_cpu.sh").read_text()
    assert 'TRITON_GRPC_ADDRESS="127.0.0.1"' in cpu_script and "GRPC_GUARD=1 " in cpu_script
