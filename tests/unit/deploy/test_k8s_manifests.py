"""The Kubernetes manifests: valid against the Kubernetes schemas (offline), and what operators need.

Validated with ``kubernetes-validate`` (a pip package bundling the Kubernetes OpenAPI schemas;
strict: an unknown field is an error), as ``make manifests`` does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
VERSION = "1.37.0"
MANIFESTS = sorted(K8S.glob("*.yaml"))


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in MANIFESTS
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


DOCUMENTS = _documents()
WORKLOADS = [(name, doc) for name, doc in DOCUMENTS if doc["kind"] in ("Deployment", "StatefulSet")]


def _pods(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["spec"]["template"]["spec"])


def test_there_are_manifests_for_the_silo_the_gateway_and_its_state() -> None:
    assert {path.name for path in MANIFESTS} == {"gateway.yaml", "silo.yaml", "redis.yaml"}
    assert {name.split(":")[1] for name, _ in WORKLOADS} == {
        "Deployment/fedrag-gateway",
        "StatefulSet/fedrag-silo",
        "StatefulSet/fedrag-redis",
    }


@pytest.mark.parametrize(("name", "doc"), DOCUMENTS, ids=[name for name, _ in DOCUMENTS])
def test_each_manifest_is_valid_against_the_kubernetes_schemas(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_validator_rejects_a_misspelt_field() -> None:
    _, doc = WORKLOADS[0]
    broken = copy.deepcopy(doc)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"tcpSocket": {"port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


@pytest.mark.parametrize(("name", "doc"), WORKLOADS, ids=[name for name, _ in WORKLOADS])
def test_every_container_is_probed_sized_and_runs_unprivileged(name: str, doc: dict[str, Any]) -> None:
    pod = _pods(doc)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    for container in pod.get("initContainers", []) + pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), container["name"]
        assert "memory" in container["resources"]["limits"], container["name"]
    for container in pod["containers"]:
        assert "readinessProbe" in container and "livenessProbe" in container, container["name"]


@pytest.mark.parametrize(("name", "doc"), WORKLOADS, ids=[name for name, _ in WORKLOADS])
def test_secrets_are_mounted_from_secret_objects_never_written_into_the_manifests(
    name: str, doc: dict[str, Any]
) -> None:
    pod = _pods(doc)
    secret_volumes = {v["name"] for v in pod["volumes"] if "secret" in v}
    assert secret_volumes, "keys, TLS and passwords come from Secrets"
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["defaultMode"] == 0o400, volume["name"]
    for container in pod.get("initContainers", []) + pod["containers"]:
        for mount in container["volumeMounts"]:
            if mount["name"] in secret_volumes:
                assert mount["readOnly"] is True, mount
        for variable in container.get("env", []):
            assert "value" not in variable or not any(
                word in variable["name"].lower() for word in ("state_url", "key", "token", "password", "secret")
            ), f"{variable['name']} is set inline: take it from a Secret"
    assert not [n for n, d in DOCUMENTS if d["kind"] == "Secret"], "no Secret objects with data in the repository"


def test_the_gateway_replicas_share_their_state_through_redis() -> None:
    (gateway,) = [doc for name, doc in WORKLOADS if name.endswith("Deployment/fedrag-gateway")]
    assert gateway["spec"]["replicas"] > 1
    (container,) = _pods(gateway)["containers"]
    env = {v["name"]: v for v in container["env"]}
    assert env["FEDRAG_GATEWAY_STATE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "fedrag-state"
    (redis,) = [doc for name, doc in WORKLOADS if name.endswith("StatefulSet/fedrag-redis")]
    args = " ".join(_pods(redis)["containers"][0]["args"])
    assert "--appendonly yes" in args and "--appendfsync always" in args, "an acknowledged charge survives a restart"
