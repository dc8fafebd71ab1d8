"""Static checks of docker/: Dockerfiles (hadolint), YAML (yamllint), Kubernetes overlays (kustomize +
kubernetes-validate --strict), the compose file and the version pins.

The tools come from ``scripts/install_lint_tools.sh`` (.venv), which ``scripts/test.sh`` runs. A missing tool
fails its check, so no run can pass without running it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from qwen3_asr_triton.export.layout import BUILD_INFO
from qwen3_asr_triton.export.versions import parse_env_file, read_versions

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"
OVERLAYS = ("gpu", "cpu")
# Oldest and newest Kubernetes minor versions the manifests are validated against.
K8S_VERSIONS = ("1.29", "1.37")
# Kinds kubernetes-validate has no schema for (CRDs); checked structurally below instead.
CRD_KINDS = {"PodMonitor"}
DOCKERFILES = ("Dockerfile.gpu", "Dockerfile.cpu")
SHELL_SCRIPTS = ("build_engines.sh", "docker/serve.sh", "docker/prepare_repository.sh", "scripts/install_lint_tools.sh")


def require_tool(name: str) -> str:
    """Path of a tool (.venv/bin first); a missing one fails the test: scripts/test.sh installs them all."""
    venv = REPO / ".venv" / "bin" / name
    path = str(venv) if venv.is_file() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not installed (scripts/test.sh installs it, through scripts/install_lint_tools.sh)")
    return path


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)


# ----------------------------------------------------------------------------- Dockerfiles
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_has_no_warning(dockerfile):
    result = run([require_tool("hadolint"), "--failure-threshold", "warning", str(DOCKER / dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    assert run([require_tool("hadolint"), "--failure-threshold", "warning", str(bad)]).returncode != 0


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_are_unprivileged_and_pinned(dockerfile):
    text = (DOCKER / dockerfile).read_text()
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    stages = {lines[a].split()[-1]: lines[a:b] for a, b in zip(starts, [*starts[1:], len(lines)])}
    for target in ("server", "builder"):
        users = [line for line in stages[target] if line.startswith("USER ")]
        assert users and users[-1] == "USER 10001", f"target {target} does not end as the unprivileged user"
        entry = [line for line in stages[target] if line.startswith("ENTRYPOINT ")]
        assert entry, f"target {target} has no entry point"
    assert "EXPOSE 8000 8001 8002" in text
    assert (DOCKER / f"{dockerfile}.dockerignore").is_file()


def test_versions_are_pinned_in_one_place():
    versions = read_versions()
    pins = parse_env_file((DOCKER / "versions.env").read_text())
    gpu = (DOCKER / "Dockerfile.gpu").read_text()
    cpu = (DOCKER / "Dockerfile.cpu").read_text()
    assert f"ARG TRITON_TRTLLM_IMAGE={versions.triton_trtllm_image}\n" in gpu
    assert f"ARG POLYGRAPHY_VERSION={versions.polygraphy_version}\n" in gpu
    assert f"ARG VIRTUALENV_VERSION={versions.virtualenv_version}\n" in gpu
    assert f"ARG CPU_BASE_IMAGE={versions.cpu_base_image}\n" in cpu
    assert versions.triton_trtllm_image.startswith("nvcr.io/nvidia/tritonserver:")
    # The preflight check of the build compares the container against exactly these pins.
    assert pins["TRTLLM_VERSION"] == versions.trtllm_version and versions.trtllm_version.count(".") == 2


def test_gpu_image_installs_the_python_models_dependencies_at_the_project_pins():
    """The gpu image installs the models' own packages with --no-deps: each at pyproject's pin, and every
    package the shared code imports at serving time (the audio front end included) among them."""

    dependencies = (REPO / "pyproject.toml").read_text().split("\ndependencies = [", 1)[1].split("\n]", 1)[0]
    pins = dict(re.findall(r'^\s*"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^"]+)",', dependencies, re.M))
    assert {"soundfile", "soxr", "av"} <= pins.keys()
    text = (DOCKER / "Dockerfile.gpu").read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if '--no-deps --target "$QWEN3_ASR_SITE"' in ln and "==" in ln)
    installed = dict(re.findall(r"([A-Za-z0-9_.-]+)==([^\s\\]+)", line.split("&&")[0]))
    for name, version in installed.items():
        if name in pins:
            assert version == pins[name], f"{name}: Dockerfile.gpu {version}, pyproject.toml {pins[name]}"
    assert {"soundfile", "soxr", "av", "tokenizers"} <= installed.keys()
    assert "cffi" in installed, "soundfile needs cffi, and --no-deps does not bring it"


def test_versions_file_rejects_what_shell_and_python_would_read_differently():
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_env_file('A="quoted"\n')
    with pytest.raises(ValueError, match="twice"):
        parse_env_file("A=1\nA=2\n")


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_scripts_parse_and_are_strict(script):
    path = REPO / script
    assert run(["bash", "-n", str(path)]).returncode == 0
    assert "set -euo pipefail" in path.read_text()
    assert os.access(path, os.X_OK), f"{script} is not executable"


# ----------------------------------------------------------------------------- YAML
def test_yamllint_strict():
    result = run([require_tool("yamllint"), "--strict", "-c", str(DOCKER / ".yamllint"), str(DOCKER)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_can_fail(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\n")
    assert run([require_tool("yamllint"), "--strict", "-c", str(DOCKER / ".yamllint"), str(bad)]).returncode != 0


# ----------------------------------------------------------------------------- Kubernetes
def kustomize(path: Path) -> str:
    result = run([require_tool("kubectl"), "kustomize", str(path)])
    assert result.returncode == 0, result.stderr
    return result.stdout


def validate(rendered: str, tmp_path: Path) -> subprocess.CompletedProcess:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered)
    argv = [require_tool("kubernetes-validate"), "--strict"]
    for version in K8S_VERSIONS:
        argv += ["-k", version]
    return run([*argv, str(manifest)])


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request):
    rendered = kustomize(K8S / "overlays" / request.param)
    return request.param, rendered, {d["kind"]: d for d in yaml.safe_load_all(rendered) if d}


def test_overlay_validates_strictly(overlay, tmp_path):
    _, rendered, _ = overlay
    result = validate(rendered, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = {line.split("resource ")[1].split()[0] for line in result.stdout.splitlines() if " passed " in line}
    warned = [line for line in result.stdout.splitlines() if line.startswith("WARN")]
    assert all(any(kind in line for kind in CRD_KINDS) for line in warned), warned
    expected = {
        "serviceaccount/qwen3-asr",
        "service/qwen3-asr",
        "deployment/qwen3-asr",
        "horizontalpodautoscaler/qwen3-asr",
        "poddisruptionbudget/qwen3-asr",
        "networkpolicy/qwen3-asr",
    }
    assert expected <= passed


def test_strict_validation_can_fail(overlay, tmp_path):
    _, rendered, _ = overlay
    docs = list(yaml.safe_load_all(rendered))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {"typo": True}
    assert validate(yaml.safe_dump_all(docs), tmp_path).returncode != 0


def _labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def test_deployment_shape(overlay):
    target, _, docs = overlay
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    # Triton and the OpenAI-compatible gateway (checked in tests/test_deploy_gateway_static.py).
    containers = {c["name"]: c for c in pod["containers"]}
    assert list(containers) == ["triton", "gateway"]
    triton = containers["triton"]
    (init,) = pod["initContainers"]
    # Triton's HTTP port (crashable by one JSON body in 2.51) is not served: gRPC and metrics only,
    # probes through gRPC health checking.
    assert {p["name"]: p["containerPort"] for p in triton["ports"]} == {"grpc": 8001, "metrics": 8002}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert triton[probe] and triton[probe]["grpc"] == {"port": 8001} and "httpGet" not in triton[probe], probe
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    for container in (triton, init):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert container["image"].startswith(f"qwen3-asr-triton-{target}")
    mounts = {m["name"]: m for m in triton["volumeMounts"]}
    assert mounts["model-repository"]["mountPath"] == "/models" and mounts["model-repository"]["readOnly"] is True
    assert mounts["dshm"]["mountPath"] == "/dev/shm"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["checkpoints"]["persistentVolumeClaim"]["readOnly"] is True
    gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for c in (triton, init)]
    if target == "gpu":
        assert gpus == [1, 1], "server and engine build each need the pod's GPU"
        assert triton["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    else:
        assert gpus == [None, None]


def test_selectors_and_ports_line_up(overlay):
    _, _, docs = overlay
    labels = _labels(docs["Deployment"])
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind, selector in (
        ("Service", docs["Service"]["spec"]["selector"]),
        ("PodDisruptionBudget", docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]),
        ("NetworkPolicy", docs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"]),
        ("PodMonitor", docs["PodMonitor"]["spec"]["selector"]["matchLabels"]),
    ):
        assert selector and selector.items() <= labels.items(), kind
    containers = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"] for c in containers for p in c["ports"]}
    assert {p["targetPort"] for p in docs["Service"]["spec"]["ports"]} <= container_ports
    assert {e["port"] for e in docs["PodMonitor"]["spec"]["podMetricsEndpoints"]} == {"metrics", "openai"}
    ingress_ports = {p["port"] for rule in docs["NetworkPolicy"]["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {"grpc", "metrics", "openai"}
    assert all(p["port"] != 8000 for p in docs["Service"]["spec"]["ports"])
    # Clients are pods labelled qwen3-asr/client=true, whatever else they carry (kustomize must not add the
    # server's own labels to this selector).
    clients = docs["NetworkPolicy"]["spec"]["ingress"][0]["from"]
    assert clients == [{"podSelector": {"matchLabels": {"qwen3-asr/client": "true"}}}]
    assert docs["NetworkPolicy"]["spec"]["egress"] == []
    assert docs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_hpa_scales_on_the_adapter_metric(overlay):
    _, _, docs = overlay
    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "qwen3-asr"}
    (metric,) = hpa["spec"]["metrics"]
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"] and 'model="qwen3_asr"' in rule["metricsQuery"]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_prebuilt_repository_component_renders(tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(K8S / "overlays" / "gpu", overlay)
    component = os.path.relpath(K8S / "components" / "prebuilt-repository", overlay)
    (overlay / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {base}\ncomponents:\n  - {component}\n"
    )
    rendered = kustomize(overlay)
    deployment = next(d for d in yaml.safe_load_all(rendered) if d["kind"] == "Deployment")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "model-repository")
    assert volume == {
        "name": "model-repository",
        "persistentVolumeClaim": {"claimName": "qwen3-asr-model-repository", "readOnly": True},
    }
    assert validate(rendered, tmp_path).returncode == 0


# ----------------------------------------------------------------------------- compose
def test_compose_services_are_hardened_and_local():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {f"{role}-{target}" for role in ("build", "triton", "gateway") for target in ("gpu", "cpu")}
    for name, service in services.items():
        assert service["read_only"] is True and service["user"] == "10001:10001", name
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name
        assert service["build"]["dockerfile"] in {f"docker/{d}" for d in DOCKERFILES}, name
        target = name.split("-")[1]
        assert service["profiles"] == [target] and f"triton-{target}" in service["image"], name
        has_gpu = "deploy" in service
        assert has_gpu == (target == "gpu" and not name.startswith("gateway-")), name
    for target in ("gpu", "cpu"):
        server = services[f"triton-{target}"]
        assert all(port.startswith("127.0.0.1:") for port in server["ports"])
        assert not any(port.endswith(":8000") for port in server["ports"]), "Triton's HTTP port stays in the container"
        assert server["depends_on"] == {f"build-{target}": {"condition": "service_completed_successfully"}}
        assert f"{target}-repository:/models:ro" in server["volumes"]
        assert server["build"]["target"] == "server" and services[f"build-{target}"]["build"]["target"] == "builder"


def test_containers_bind_tritons_http_port_to_loopback():
    text = (DOCKER / "serve.sh").read_text()
    assert 'HTTP_ADDRESS="${TRITON_HTTP_ADDRESS:-127.0.0.1}"' in text
    assert '--http-address "$HTTP_ADDRESS"' in text and '--http-address="$HTTP_ADDRESS"' in text
    assert '--http-address="$ADDRESS"' not in text


# ----------------------------------------------------------------------------- entry points
def _entry(script: str, repo: Path, target: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODEL_REPOSITORY": str(repo), "QWEN3_ASR_TARGET": target}
    return run([str(DOCKER / script)], env=env)


def test_prepare_repository_keeps_a_finished_build_and_refuses_a_foreign_one(tmp_path):
    (tmp_path / BUILD_INFO).write_text('{"target": "gpu"}')
    kept = _entry("prepare_repository.sh", tmp_path, "gpu")
    assert kept.returncode == 0 and "nothing to do" in kept.stderr
    foreign = _entry("prepare_repository.sh", tmp_path, "cpu")
    assert foreign.returncode == 2 and "holds a gpu build" in foreign.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = run(
        [str(DOCKER / "prepare_repository.sh")],
        env={
            **os.environ,
            "MODEL_REPOSITORY": str(empty),
            "QWEN3_ASR_TARGET": "cpu",
            "QWEN3_ASR_CHECKPOINT": str(tmp_path / "none"),
        },
    )
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_serve_refuses_a_repository_of_another_target(tmp_path):
    (tmp_path / BUILD_INFO).write_text('{"target": "cpu"}')
    result = _entry("serve.sh", tmp_path, "gpu")
    assert result.returncode == 2 and "no finished gpu build" in result.stderr
    assert _entry("serve.sh", tmp_path / "absent", "cpu").returncode == 2
