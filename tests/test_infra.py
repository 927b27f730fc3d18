"""The files under infra/ as their tools read them: the compose file through docker-compose (it parses and
interpolates without a Docker engine), the Ray cluster config through the checks `ray up` runs, the KubeRay
manifest and every `ray start` command line against Ray's own CLI options."""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import ray
import yaml
from ray.scripts.scripts import start as ray_start_command

from flows.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
# The services that run mmrag code and so need the store, S3, Prefect and Ray wiring.
MMRAG_SERVICES = ("s3-init", "ray-head", "ray-worker", "mmrag-worker", "query")
RAY_START_OPTIONS = {opt for p in ray_start_command.params for opt in p.opts}


def _compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (scripts/install_system_deps.sh installs Debian's package)")
    # Only what this test sets: a developer's MMRAG_*/S3 variables must not change the checked defaults.
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    return subprocess.run([exe, "-f", str(INFRA / "compose.yaml"), *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file after docker-compose's parsing, interpolation and merging of the x- anchors."""
    proc = _compose("config")
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_compose_file_is_valid() -> None:
    proc = _compose("config", "-q")
    assert proc.returncode == 0, f"docker-compose rejected infra/compose.yaml:\n{proc.stderr}"


def test_compose_has_the_production_stack(compose: dict) -> None:
    services = compose["services"]
    assert {"postgres", "prefect-server", "s3", "ray-head", "ray-worker", "mmrag-worker", "query"} <= set(services)
    db_url = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    parsed = urlparse(db_url)
    pg = services["postgres"]["environment"]
    assert parsed.scheme.startswith("postgresql") and parsed.hostname == "postgres"
    assert (parsed.username, parsed.password, parsed.path.lstrip("/")) == (
        pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    assert "--head" in _command(services["ray-head"])
    assert int(services["ray-worker"]["deploy"]["replicas"]) >= 2


def test_compose_wires_every_mmrag_service(compose: dict) -> None:
    services = compose["services"]
    s3_env = services["s3"]["environment"]
    for name in MMRAG_SERVICES:
        env = services[name]["environment"]
        assert urlparse(env["PREFECT_API_URL"]).hostname == "prefect-server", name
        assert env["RAY_ADDRESS"].split(":")[0] == "ray-head", name
        assert env["MMRAG_STORE"].startswith("s3://"), name
        assert urlparse(env["MMRAG_S3_ENDPOINT_URL"]).hostname == "s3", name
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
            s3_env["S3_ACCESS_KEY"], s3_env["S3_SECRET_KEY"]), f"{name} must use the S3 server's credentials"
        assert services[name]["image"] == services["ray-head"]["image"], "one image: Ray needs equal versions"
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"] == services["ray-head"]["environment"]["RAY_AUTH_TOKEN"], name


def test_compose_credentials_come_from_the_environment() -> None:
    proc = _compose("config", env={"MMRAG_S3_ACCESS_KEY": "k-123", "MMRAG_S3_SECRET_KEY": "s-456",
                                   "PREFECT_DB_PASSWORD": "pw-789", "RAY_WORKERS": "5", "RAY_AUTH_TOKEN": "t-0"})
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert services["s3"]["environment"]["S3_SECRET_KEY"] == "s-456"
    for name in MMRAG_SERVICES:
        env = services[name]["environment"]
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("k-123", "s-456")
        assert env["RAY_AUTH_TOKEN"] == "t-0"
    assert "pw-789" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw-789"
    assert int(services["ray-worker"]["deploy"]["replicas"]) == 5


def test_compose_commands_exist(compose: dict) -> None:
    """Every `ray start` flag is one Ray knows, and the mmrag subcommands are ones the CLI has."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    mmrag_commands = set(sub.choices)
    seen_mmrag = set()
    for name, service in compose["services"].items():
        for line in _shell_lines(_command(service)):
            words = shlex.split(line)
            words = words[1:] if words[:1] == ["exec"] else words
            if words[:2] == ["ray", "start"]:
                _assert_ray_start_flags(words, name)
            elif words and words[0] == "mmrag":
                assert words[1] in mmrag_commands, f"{name}: mmrag has no command {words[1]!r}"
                seen_mmrag.add(words[1])
    assert "worker" in seen_mmrag, "the mmrag-worker service runs `mmrag worker`"


def test_dockerfile_copies_what_the_package_needs() -> None:
    text = (INFRA / "Dockerfile").read_text()
    sources = [src for line in text.splitlines() if line.startswith("COPY ")
               for src in line.split()[1:-1] if not src.startswith("--")]
    assert sources, "the Dockerfile copies the sources"
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: not in the build context (the repository root)"
    packages = {"mmrag_core", "tasks", "flows"}
    assert packages <= {Path(s).name for s in sources}
    ignore = (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
    for src in sources:
        assert any(line.startswith(f"!{src}") for line in ignore), f"{src} is excluded from the build context"


def test_ray_cluster_config_passes_ray_up_checks() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((INFRA / "ray-cluster.yaml").read_text())
    config = prepare_config(raw)
    validate_config(config)  # the JSON schema and checks `ray up` applies before it touches a node
    assert config["provider"]["type"] == "local" and raw["provider"]["worker_ips"]
    assert config["docker"]["image"], "nodes run the mmrag image"
    assert any("--shm-size" in opt for opt in config["docker"]["run_options"])
    head = " ".join(config["head_start_ray_commands"])
    assert "--head" in head and "--port=6379" in head and "--num-cpus=0" in head
    assert any("$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])
    for line in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        for part in line.split(";"):
            words = shlex.split(part)
            if words[:2] == ["ray", "start"]:
                _assert_ray_start_flags(words, "ray-cluster.yaml")


def test_kuberay_manifest() -> None:
    docs = [d for d in yaml.safe_load_all((INFRA / "kuberay-raycluster.yaml").read_text()) if d]
    assert len(docs) == 1
    rc = docs[0]
    assert (rc["apiVersion"], rc["kind"]) == ("ray.io/v1", "RayCluster")
    spec = rc["spec"]
    assert spec["rayVersion"] == ray.__version__, "rayVersion must match the Ray the image installs"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    groups = [head, *spec["workerGroupSpecs"]]
    for group in groups:
        for key in group["rayStartParams"]:
            assert f"--{key}" in RAY_START_OPTIONS, f"rayStartParams {key!r} is not a `ray start` option"
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"].split("/")[-1].startswith("mmrag:")
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["MMRAG_STORE"].startswith("s3://") and env["MMRAG_S3_ENDPOINT_URL"]
        secrets = {src["secretRef"]["name"] for src in container["envFrom"]}
        assert {"mmrag-s3", "mmrag-ray"} <= secrets, "S3 credentials and the Ray token come from Secrets"
        assert env["RAY_AUTH_MODE"] == "token"
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
    assert any("nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
               for g in spec["workerGroupSpecs"]), "a GPU group for model actors"


def _command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def _shell_lines(cmd: list[str]) -> list[str]:
    """The command lines a service runs: the `sh -c` script split at && and ;, or the command itself."""
    if cmd[:2] in (["sh", "-c"], ["/bin/sh", "-c"]):
        return [p.strip() for p in re.split(r"&&|;", cmd[2]) if p.strip()]
    return [shlex.join(cmd)] if cmd else []


def _assert_ray_start_flags(words: list[str], where: str) -> None:
    for word in words[2:]:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            assert flag in RAY_START_OPTIONS, f"{where}: `ray start` has no option {flag}"
