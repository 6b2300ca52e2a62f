"""The deploy files, validated without a Docker engine or a cluster.

- deploy/docker-compose.yml against the Compose specification's JSON schema (check-jsonschema's
  vendored copy), plus the wiring between services;
- deploy/Dockerfile with hadolint;
- deploy/k8s/*.yaml against the Kubernetes API schemas (kubernetes-validate --strict); the KEDA
  objects, which are CRDs with no schema there, by their references to the other manifests;
- every IMSIM_* variable named in a deploy file exists in the settings module, and the generated
  references (deploy/.env.example, docs/configuration.md) equal what the code generates.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imsim.settings import known_variables
from imsim.settings.reference import env_example, markdown_reference

from .support.servers import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        pytest.fail(f"{name} is not installed: run `bash scripts/install.sh --test`")
    return path


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def k8s_docs() -> dict[tuple[str, str], dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and "metadata" in doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def test_compose_file_matches_the_compose_spec():
    proc = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "docker-compose.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_wiring():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"etcd", "minio", "milvus", "attu", "redis", "flower", "api", "worker-gpu0", "worker-cpu"} <= set(services)
    for name, svc in services.items():
        image = svc.get("image", "")
        assert ":" in image and not image.endswith(":latest") or "build" in svc, f"{name}: image not pinned"
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert services["milvus"]["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
    assert services["attu"]["environment"]["MILVUS_URL"] == "milvus:19530"
    gpu_workers = [s for n, s in services.items() if n.startswith("worker-gpu")]
    device_ids = set()
    for svc in gpu_workers:
        assert svc["profiles"] == ["gpu"] and svc["environment"]["IMSIM_DEVICE"] == "cuda"
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
        device_ids.add(device["device_ids"][0])
        assert svc["environment"]["IMSIM_MILVUS_URI"] == "http://milvus:19530"
        assert svc["environment"]["IMSIM_REDIS_URL"] == "redis://redis:6379/0"
    assert len(device_ids) == len(gpu_workers), "two workers share a GPU"
    assert services["worker-cpu"]["profiles"] == ["cpu"] and services["worker-cpu"]["environment"]["IMSIM_DEVICE"] == "cpu"
    assert services["worker-cpu"]["build"]["dockerfile"] == "deploy/Dockerfile"
    names = [svc["command"][svc["command"].index("--name") + 1] for n, svc in services.items() if n.startswith("worker-")]
    assert len(set(names)) == len(names) == 3  # readable, distinct worker names in Flower and `imsim doctor`


def test_compose_publishes_nothing_beyond_this_machine_and_authenticates():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert set(published) == {"milvus", "attu", "flower", "api"}
    for name, ports in published.items():
        assert all(str(p).startswith("127.0.0.1:") for p in ports), f"{name} publishes on every interface: {ports}"
    flower = services["flower"]
    assert flower["command"][:4] == ["celery", "-A", "workers", "flower"]  # imsim's app: it knows the imsim queue
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")  # required, no default
    assert "IMSIM_REDIS_URL" in flower["environment"]
    mount = next(v for v in services["milvus"]["volumes"] if v.endswith(":/milvus/configs/user.yaml:ro"))
    user_config = yaml.safe_load((DEPLOY / mount.split(":")[0]).read_text())
    assert user_config["common"]["security"]["authorizationEnabled"] is True
    for name, svc in services.items():
        if name.startswith("worker-"):
            assert svc["environment"]["IMSIM_MILVUS_TOKEN"].startswith("${IMSIM_MILVUS_TOKEN:-")
    api = services["api"]
    command = api["command"]
    assert command[:2] == ["imsim", "serve"] and command[command.index("--host") + 1] == "0.0.0.0"
    assert api["environment"]["IMSIM_API_TOKEN"].startswith("${IMSIM_API_TOKEN:?")  # required: it binds 0.0.0.0
    port = command[command.index("--port") + 1]
    assert api["ports"] == [f"127.0.0.1:{port}:{port}"] and f":{port}/readyz" in " ".join(api["healthcheck"]["test"])
    assert api["environment"]["IMSIM_ALLOWED_ROOTS"] == "/images" and any(v.endswith(":/images:ro") for v in api["volumes"])


def test_dockerfile_passes_hadolint_and_installs_the_project():
    proc = run(tool("hadolint"), str(DEPLOY / "Dockerfile"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (DEPLOY / "Dockerfile").read_text()
    assert (
        "COPY pyproject.toml" in text and 'pip install . && pip install "flower==' in text and re.search(r"^USER \d+", text, re.M)
    )


def test_kubernetes_manifests_match_the_api_schemas():
    files = [str(p) for p in sorted(K8S.glob("*.yaml")) if p.name not in ("milvus-values.yaml", "kustomization.yaml")]
    proc = run(tool("kubernetes-validate"), "--strict", "--no-warn", *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed for resource deployment/imsim-worker" in proc.stdout


def test_kubernetes_objects_reference_each_other(tmp_path):
    docs = k8s_docs()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert all((K8S / r).exists() for r in kustomization["resources"])
    worker = docs[("Deployment", "imsim-worker")]["spec"]["template"]["spec"]
    (container,) = worker["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    config = docs[("ConfigMap", "imsim-config")]["data"]
    secret = docs[("Secret", "imsim-secrets")]["stringData"]
    assert {"configMapRef": {"name": "imsim-config"}} in container["envFrom"]
    assert {"secretRef": {"name": "imsim-secrets"}} in container["envFrom"]
    scaled = docs[("ScaledObject", "imsim-worker")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "imsim-worker"
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == config["IMSIM_QUEUE"]
    assert trigger["metadata"]["address"].startswith("redis.imsim.svc")
    auth = docs[("TriggerAuthentication", trigger["authenticationRef"]["name"])]["spec"]["secretTargetRef"][0]
    assert auth["name"] == "imsim-secrets" and auth["key"] in secret
    redis_args = docs[("StatefulSet", "redis")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis_args[redis_args.index("--appendonly") + 1] == "yes"
    for kind, name in [("Service", "attu"), ("Service", "flower"), ("Service", "redis"), ("Service", "imsim-api")]:
        selector = docs[(kind, name)]["spec"]["selector"]
        targets = [
            d
            for (k, _), d in docs.items()
            if k in ("Deployment", "StatefulSet") and d["spec"]["template"]["metadata"]["labels"] == selector
        ]
        assert targets, f"{kind}/{name} selects no pods"
    values = yaml.safe_load((K8S / "milvus-values.yaml").read_text())
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert values["cluster"]["enabled"] is True
    assert compose["services"]["milvus"]["image"].endswith(":" + values["image"]["all"]["tag"])
    assert config["IMSIM_MILVUS_URI"] == "http://milvus.imsim.svc.cluster.local:19530"
    # the query nodes hold what auto's index choice for the expected rows needs, for a 512-d and a 768-d model
    from imsim.store import indexes

    rows, budget = int(config["IMSIM_EXPECTED_ROWS"]), float(config["IMSIM_INDEX_MEMORY_GB"])
    need = sum(indexes.KINDS[indexes.choose(rows, dim, budget)].memory_bytes(rows, dim) for dim in (512, 768))
    node = values["queryNode"]["resources"]["limits"]["memory"]
    assert node.endswith("Gi") and need <= 0.75 * values["queryNode"]["replicas"] * int(node[:-2]) * 2**30
    assert yaml.safe_load(values["extraConfigFiles"]["user.yaml"])["queryNode"]["enableDisk"] is True

    # the API: probes on the paths `imsim serve` answers without a token, on the port it listens on; the HPA scales it
    from imsim.api.app import create_app, open_paths
    from imsim.api.service import Service
    from imsim.settings import load

    served = create_app(Service(load({"data_dir": tmp_path / "data", "env_file": tmp_path / "none.env"})))

    api = docs[("Deployment", "imsim-api")]["spec"]["template"]["spec"]
    (container,) = api["containers"]
    port = int(container["command"][container["command"].index("--port") + 1])
    assert container["command"][container["command"].index("--host") + 1] == "0.0.0.0" and "IMSIM_API_TOKEN" in secret
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    exposed = re.search(r"^EXPOSE (.+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert exposed and str(port) in exposed.group(1).split()  # the image says which port the API listens on
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"  # the process answers
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"  # started once the models are loaded
    assert {"/readyz", "/healthz"} <= open_paths(served) and "/v1/search/text" not in open_paths(served)
    assert {"configMapRef": {"name": "imsim-config"}} in container["envFrom"]
    service = docs[("Service", "imsim-api")]["spec"]
    assert service["ports"][0]["targetPort"] == "http"
    hpa = docs[("HorizontalPodAutoscaler", "imsim-api")]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "imsim-api"}
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"] and container["resources"]["requests"]["cpu"]  # HPA needs requests


def test_every_imsim_variable_in_deploy_files_is_a_setting_and_every_setting_is_in_env_example():
    known = set(known_variables())
    named = set()
    for path in [DEPLOY / "docker-compose.yml", DEPLOY / ".env.example", DEPLOY / "Dockerfile", *K8S.glob("*.yaml")]:
        named |= set(re.findall(r"\bIMSIM_[A-Z0-9_]+", path.read_text()))
    named.discard("IMSIM_IMAGES_DIR")  # a compose interpolation variable (host folder to mount), not a setting
    assert named - known == set(), f"unknown settings in deploy files: {named - known}"
    in_example = set(re.findall(r"^# (IMSIM_[A-Z0-9_]+)=", (DEPLOY / ".env.example").read_text(), re.M))
    assert in_example == known


def test_generated_references_are_current():
    assert (DEPLOY / ".env.example").read_text() == env_example(), "run: imsim config --env > deploy/.env.example"
    assert (ROOT / "docs" / "configuration.md").read_text() == markdown_reference(), (
        "run: imsim config --markdown > docs/configuration.md"
    )
