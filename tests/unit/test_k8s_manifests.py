"""deploy/k8s: the Kubernetes manifests agree with the code they run.

Checked against the real CLI parser (commands and flags), the real config loader (the
ConfigMap's canopy.yaml plus each container's CANOPY_* env, as Kubernetes would expand it) and
each other (probes on the health port, Service selectors and target ports, the HPA's target,
security contexts). No cluster is involved: these are static checks of the YAML.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.cli import build_parser
from cluster.config import CanopyConfig, config_keys, load_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
EXAMPLE = ROOT / "deploy" / "canopy.example.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
WORKLOADS = ("Deployment", "StatefulSet")
POD_IP = "10.1.2.3"  # stands in for the downward API's status.podIP
# The listen-port / advertise keys of each role that listens (data nodes only serve health).
ROLE_PORT_KEY = {
    "coordinator": "coordinator.port",
    "proxy": "proxy.port",
    "streaming-node": "streaming.port",
    "query-node": "querynode.port",
}
ROLE_ADVERTISE_KEY = {"streaming-node": "streaming.advertise", "query-node": "querynode.advertise"}
QUANTITY = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6}

Doc = dict[str, Any]


# --- loading -----------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_objects() -> list[Doc]:
    """Every object of every manifest (empty documents dropped)."""
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(objects: list[Doc], *kinds: str) -> list[Doc]:
    return [o for o in objects if o["kind"] in kinds]


def containers(objects: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """``(workload, container)`` for every container of every Deployment/StatefulSet."""
    for workload in of_kind(objects, *WORKLOADS):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            yield workload, container


def configmap_text(objects: list[Doc]) -> str:
    (cm,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"] == "canopy-config"]
    return cm["data"]["canopy.yaml"]


def flat_keys(raw: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in raw.items():
        out += flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key]
    return out


def env_of(container: Doc) -> dict[str, str]:
    """The container's env as Kubernetes expands it: ``$(VAR)`` of an earlier entry replaced,
    ``status.podIP`` from the downward API as :data:`POD_IP`."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), str(entry["value"])
            )
        elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[entry["name"]] = POD_IP
    return env


def effective_config(text: str, container: Doc, tmp_path: Path) -> CanopyConfig:
    """What ``canopy <role> --config`` loads in this container: the ConfigMap file + its env."""
    path = tmp_path / "canopy.yaml"
    path.write_text(text)
    return load_config(path, env=env_of(container))


def get(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def port_number(container: Doc, port: int | str) -> int:
    """A probe's or Service's (target) port: a number, or the name of a container port."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return number


def quantity(text: str | int) -> int:
    match = re.fullmatch(r"(\d+)([KMGT]i|[kM])?", str(text))
    assert match, f"unsupported quantity {text!r}"
    return int(match[1]) * QUANTITY[match[2] or ""]


def pod_spec(workload: Doc) -> Doc:
    return workload["spec"]["template"]["spec"]


def image_workdir() -> str:
    """The image's WORKDIR (deploy/Dockerfile): its user's HOME and the default data dir."""
    (workdir,) = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    return workdir


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The ``canopy`` subcommands as the real CLI registers them."""
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.fixture(scope="module")
def objects() -> list[Doc]:
    return load_objects()


@pytest.fixture(scope="module")
def cm_text(objects: list[Doc]) -> str:
    return configmap_text(objects)


@pytest.fixture(scope="module")
def cm_raw(cm_text: str) -> dict[str, Any]:
    return yaml.safe_load(cm_text)


# --- structure ---------------------------------------------------------------------------------


def test_every_file_parses_into_named_objects() -> None:
    assert manifest_files(), "no manifests in deploy/k8s"
    for path in [*manifest_files(), K8S / "kustomization.yaml"]:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert docs, f"{path.name} holds no object"
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), path.name
            if doc["kind"] != "Kustomization":
                assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} unnamed"


def test_kustomization_lists_exactly_the_manifests() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert sorted(listed) == [p.name for p in manifest_files()]


def test_every_namespaced_object_is_in_the_namespace(objects: list[Doc]) -> None:
    (namespace,) = of_kind(objects, "Namespace")
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace["metadata"]["name"], obj


# --- commands and configuration ----------------------------------------------------------------


def test_container_args_are_real_commands_and_flags(objects: list[Doc]) -> None:
    commands = subcommands()
    assert {"coordinator", "proxy"} <= set(commands)  # the parser really was read
    seen = set()
    for workload, container in containers(objects):
        args = container["args"]
        command = args[0]
        assert command in commands, f"{workload['metadata']['name']}: no command {command!r}"
        seen.add(command)
        known = {opt for action in commands[command]._actions for opt in action.option_strings}
        flags = [a.split("=", 1)[0] for a in args[1:] if a.startswith("-")]
        unknown = [f for f in flags if f not in known]
        assert not unknown, f"{workload['metadata']['name']}: {command} has no {unknown}"
        build_parser().parse_args(args)  # and argparse accepts the whole line
    assert seen, "no workload runs a canopy command"


def test_config_flag_points_at_the_mounted_configmap(objects: list[Doc]) -> None:
    for workload, container in containers(objects):
        args = container["args"]
        path = Path(args[args.index("--config") + 1])
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        configs = [
            name
            for name, at in mounts.items()
            if Path(at) == path.parent
            and volumes[name].get("configMap", {}).get("name") == "canopy-config"
        ]
        assert configs, f"{container['name']}: {path} is not in the mounted canopy-config"


def test_env_vars_name_real_config_keys(objects: list[Doc]) -> None:
    names = {"CANOPY_" + key.upper().replace(".", "__") for key in config_keys()}
    for _, container in containers(objects):
        for entry in container.get("env", []):
            if entry["name"].startswith("CANOPY_"):
                assert entry["name"] in names, f"{container['name']}: {entry['name']} is no key"


def test_configmap_loads_and_has_the_example_keys(cm_text: str, tmp_path: Path) -> None:
    path = tmp_path / "canopy.yaml"
    path.write_text(cm_text)
    config = load_config(path, env={})
    config.check()
    keys = flat_keys(yaml.safe_load(cm_text))
    assert set(keys) <= set(config_keys())
    assert sorted(keys) == sorted(flat_keys(yaml.safe_load(EXAMPLE.read_text())))


def test_each_container_config_loads(objects: list[Doc], cm_text: str, tmp_path: Path) -> None:
    for _, container in containers(objects):
        effective_config(cm_text, container, tmp_path).check()


# --- probes, ports, services --------------------------------------------------------------------


def test_probes_use_the_health_port(objects: list[Doc], cm_raw: dict[str, Any]) -> None:
    health_port = cm_raw["health"]["port"]
    assert health_port > 0
    for _, container in containers(objects):
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get_ = container[probe]["httpGet"]
            assert get_["path"] == path, f"{container['name']}: {probe}"
            assert port_number(container, get_["port"]) == health_port, container["name"]


def test_role_ports_and_advertised_addresses(
    objects: list[Doc], cm_text: str, tmp_path: Path
) -> None:
    for _, container in containers(objects):
        role = container["args"][0]
        config = effective_config(cm_text, container, tmp_path)
        declared = {p["containerPort"] for p in container.get("ports", [])}
        assert config.health.port in declared, container["name"]
        if role not in ROLE_PORT_KEY:
            continue
        port = get(config, ROLE_PORT_KEY[role])
        assert port in declared, f"{role}: listens on {port}, declares {declared}"
        assert get(config, ROLE_PORT_KEY[role].replace("port", "host")) == "0.0.0.0"
        if role in ROLE_ADVERTISE_KEY:
            assert get(config, ROLE_ADVERTISE_KEY[role]) == f"{POD_IP}:{port}", role


def matching_containers(objects: list[Doc], selector: dict[str, str]) -> list[Doc]:
    return [
        c
        for w, c in containers(objects)
        if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
    ]


def test_services_select_pods_and_target_their_role_ports(
    objects: list[Doc], cm_text: str, tmp_path: Path
) -> None:
    services = of_kind(objects, "Service")
    assert services
    for service in services:
        name = service["metadata"]["name"]
        selected = matching_containers(objects, service["spec"]["selector"])
        assert selected, f"Service {name} selects no pod"
        for container in selected:
            config = effective_config(cm_text, container, tmp_path)
            role_port = get(config, ROLE_PORT_KEY[container["args"][0]])
            for port in service["spec"]["ports"]:
                target = port_number(container, port.get("targetPort", port["port"]))
                assert target == role_port, f"Service {name} targets {target}, not {role_port}"


def test_workload_selectors_match_their_templates(objects: list[Doc]) -> None:
    for workload in of_kind(objects, *WORKLOADS):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()


def test_coordinator_address_is_its_service(objects: list[Doc], cm_raw: dict[str, Any]) -> None:
    host, port = cm_raw["coordinator"]["address"].rsplit(":", 1)
    (service,) = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == host]
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    roles = {c["args"][0] for c in matching_containers(objects, service["spec"]["selector"])}
    assert roles == {"coordinator"}


def test_coordinator_runs_alone(objects: list[Doc]) -> None:
    (workload,) = [w for w, c in containers(objects) if c["args"][0] == "coordinator"]
    assert workload["spec"]["replicas"] == 1
    assert workload["spec"]["strategy"]["type"] == "Recreate"


def test_hpa_targets_a_deployment_with_cpu_requests(objects: list[Doc]) -> None:
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    assert hpas
    for hpa in hpas:
        assert hpa["apiVersion"] == "autoscaling/v2"
        ref = hpa["spec"]["scaleTargetRef"]
        (target,) = [
            w
            for w in of_kind(objects, ref["kind"])
            if w["metadata"]["name"] == ref["name"] and w["apiVersion"] == ref["apiVersion"]
        ]
        for container in pod_spec(target)["containers"]:
            assert "cpu" in container["resources"]["requests"], container["name"]


def test_data_nodes_turn_off_the_embedded_worker(
    objects: list[Doc], cm_raw: dict[str, Any], cm_text: str, tmp_path: Path
) -> None:
    data_nodes = [c for _, c in containers(objects) if c["args"][0] == "data-node"]
    if data_nodes:
        assert cm_raw["datanode"]["embedded"] is False
    for container in data_nodes:
        threads = effective_config(cm_text, container, tmp_path).datanode.build_threads
        cpu = container["resources"]["limits"]["cpu"]
        assert 0 < threads <= quantity(cpu), "build threads beyond the pod's CPU limit"


# --- security and writable paths ----------------------------------------------------------------


def test_everything_runs_as_non_root(objects: list[Doc]) -> None:
    for workload, container in containers(objects):
        pod = pod_spec(workload).get("securityContext", {})
        own = container.get("securityContext", {})
        assert own.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, container["name"]
        assert own.get("runAsUser", pod.get("runAsUser")) not in (None, 0), container["name"]
        assert own.get("allowPrivilegeEscalation") is False, container["name"]


def test_writable_paths_are_volumes(objects: list[Doc], cm_text: str, tmp_path: Path) -> None:
    """A read-only root filesystem needs /tmp, the image's working directory (its user's HOME)
    and the cache directories (querynode.cache_dir, streaming.sealed_cache_dir) on writable
    volumes; a cache's volume holds its size bound."""
    for workload, container in containers(objects):
        if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
            continue
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        writable = {
            m["mountPath"]: volumes[m["name"]]
            for m in container["volumeMounts"]
            if not m.get("readOnly")
        }
        for needed in ("/tmp", image_workdir()):
            assert needed in writable, f"{container['name']}: {needed} is not writable"
        config = effective_config(cm_text, container, tmp_path)
        cache = {
            "query-node": (config.querynode.cache_dir, config.querynode.cache_gb),
            "streaming-node": (config.streaming.sealed_cache_dir, config.streaming.sealed_cache_gb),
        }.get(container["args"][0])
        if cache is None:
            continue
        cache_dir, cache_gb = cache
        assert cache_dir, f"{container['name']}: its cache would be a temp dir under /tmp"
        mounts = [at for at in writable if cache_dir == at or cache_dir.startswith(at + "/")]
        assert mounts, f"{container['name']}: cache {cache_dir} is not on a writable volume"
        limit = writable[max(mounts, key=len)].get("emptyDir", {}).get("sizeLimit")
        if limit is not None:
            assert cache_gb * 2**30 <= quantity(limit), container["name"]
