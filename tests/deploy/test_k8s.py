"""deploy/k8s: every target builds with kustomize, validates offline, and keeps its contracts.

Kubernetes objects are checked against the JSON schemas shipped by the Python package
kubernetes-validate (strict: an unknown field is an error); the KEDA ScaledObjects against
the CRD vendored in tests/fixtures/keda/ (plus what the API server would prune unseen).
The contracts with the code: one Deployment + PodDisruptionBudget per stage running
`tidings run --stage <stage>`, probes on the observe port, a grace period above the stop
bound, every TIDINGS_ variable a real setting, and each consumer stage's ScaledObject on its
own consumer group, capped at its input topics' partitions.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type hints
import pytest
import yaml
from pydantic import BaseModel

from catalog import load_catalog
from schemas.channels import CHANNELS
from schemas.settings import TidingsSettings, load_settings
from streams.app import STAGES as APP_STAGES
from streams.cli.status import stage_topics
from streams.runtime.kafka import pipeline_topics
from tests.deploy.conftest import ROOT, TARGETS

Obj = dict[str, Any]
Builds = dict[str, list[Obj]]

# Every stage `tidings run --stage` knows: a stage added to the code without its manifests
# fails here. All but callbacks (an HTTP server) consume a group each: KEDA scales those.
STAGES = APP_STAGES
CONSUMER_STAGES = tuple(s for s in STAGES if s not in ("callbacks", "gateway"))
CONTAINER = "tidings"
# The oldest Kubernetes these manifests are meant for, and the newest schemas shipped.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
KEDA_CRD = ROOT / "tests" / "fixtures" / "keda" / "keda.sh_scaledobjects.yaml"
# The Kafka scaler's trigger-metadata keys in KEDA v2.20.2 (the `keda:"name=…"` tags of
# pkg/scalers/kafka_scaler.go; a `…FromEnv` form reads the value from the target container's
# environment). KEDA doesn't refuse a key it doesn't know: a typo would fall back to a default.
KAFKA_SCALER_KEYS = frozenset(
    {
        "bootstrapServers",
        "bootstrapServersFromEnv",
        "consumerGroup",
        "consumerGroupFromEnv",
        "topic",
        "topicFromEnv",
        "partitionLimitation",
        "lagThreshold",
        "activationLagThreshold",
        "offsetResetPolicy",
        "allowIdleConsumers",
        "excludePersistentLag",
        "scaleToZeroOnInvalidOffset",
        "limitToPartitionsWithLag",
        "ensureEvenDistributionOfPartitions",
        "version",
        "tls",
        "unsafeSsl",
        "sasl",
        "saslTokenProvider",
        "awsRegion",
    }
)


# ---------------------------------------------------------------- helpers


def kinds(docs: list[Obj], kind: str) -> dict[str, Obj]:
    """The objects of `kind`, by name."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def deployment(docs: list[Obj], stage: str) -> Obj:
    found = kinds(docs, "Deployment")
    assert f"tidings-{stage}" in found, f"no Deployment tidings-{stage}"
    return found[f"tidings-{stage}"]


def container(dep: Obj) -> Obj:
    by_name = {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}
    assert CONTAINER in by_name, f"{dep['metadata']['name']}: no container {CONTAINER!r}"
    ctr: Obj = by_name[CONTAINER]
    return ctr


def config_env(docs: list[Obj]) -> dict[str, str]:
    """The data of the generated ConfigMap tidings-config (its name carries a hash)."""
    found = [
        d for name, d in kinds(docs, "ConfigMap").items() if name.startswith("tidings-config-")
    ]
    assert len(found) == 1, "expected one generated ConfigMap tidings-config-<hash>"
    data = found[0]["data"]
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


def container_env(docs: list[Obj], ctr: Obj) -> dict[str, str]:
    """What a container's environment holds as plain values: envFrom ConfigMaps, then env."""
    maps = {name: d.get("data", {}) for name, d in kinds(docs, "ConfigMap").items()}
    env: dict[str, str] = {}
    for source in ctr.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref, f"envFrom {source}: only ConfigMaps expected"
        assert ref["name"] in maps, f"envFrom names ConfigMap {ref['name']}, not in the build"
        env.update(maps[ref["name"]])
    for var in ctr.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
    return env


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ with every TIDINGS_ variable replaced by `env`, for load_settings()."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    with mock.patch.dict(os.environ, {**keep, **env}, clear=True):
        yield


def settings_of(docs: list[Obj], stage: str = "route") -> TidingsSettings:
    """The settings one stage's pod runs with (its plain env; secrets left at defaults)."""
    with environment(container_env(docs, container(deployment(docs, stage)))):
        return load_settings()


def input_topics(stage: str, s: TidingsSettings) -> dict[str, int]:
    """A consumer stage's input topics (as the stage subscribes: `stage_topics`) with their
    configured partition counts."""
    inputs = stage_topics(s)
    assert stage in inputs, f"input_topics: no inputs known for stage {stage!r}: add them"
    every = pipeline_topics(s)
    return {name: every[name] for name in inputs[stage]}


def group_of(stage: str, s: TidingsSettings) -> str:
    """A consumer stage's group: the setting of its name (groups.route … groups.recipients)."""
    assert stage in type(s.groups).model_fields, f"no setting groups.{stage}"
    group = getattr(s.groups, stage)
    assert isinstance(group, str)
    return group


def pruned(schema: Obj, value: Any, path: str = "") -> list[str]:
    """Fields of `value` the schema doesn't declare: what the API server drops on the floor."""
    out: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return out
        for key, sub in value.items():
            if props is not None and key in props:
                out += pruned(props[key], sub, f"{path}.{key}")
            elif isinstance(extra, dict):
                out += pruned(extra, sub, f"{path}.{key}")
            elif props is not None or extra is False:
                out.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += pruned(schema["items"], item, f"{path}[{i}]")
    return out


def keda_schema() -> Obj:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = version["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def setting_exists(name: str) -> bool:
    """Whether TIDINGS_<SECTION>__<FIELD>[__<FIELD>…] names a field of TidingsSettings."""
    parts = name.removeprefix("TIDINGS_").lower().split("__")
    model: type[BaseModel] = TidingsSettings
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        ann = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                return False
            model = ann
    return True


def all_tidings_env_names(docs: list[Obj]) -> set[str]:
    names = {k for k in config_env(docs) if k.startswith("TIDINGS_")}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        spec = doc["spec"]["template"]["spec"]
        for ctr in spec.get("initContainers", []) + spec["containers"]:
            names |= {v["name"] for v in ctr.get("env", []) if v["name"].startswith("TIDINGS_")}
    return names


# ---------------------------------------------------------------- building and schemas


@pytest.mark.parametrize("target", TARGETS)
def test_kustomize_builds_every_target(builds: Builds, target: str) -> None:
    docs = builds[target]
    assert {f"tidings-{s}" for s in STAGES} == set(kinds(docs, "Deployment"))
    assert {f"tidings-{s}" for s in STAGES} == set(kinds(docs, "PodDisruptionBudget"))
    assert {f"tidings-{s}" for s in CONSUMER_STAGES} == set(kinds(docs, "ScaledObject"))
    assert set(kinds(docs, "Job")) == {"tidings-setup"}
    if target != "base":
        (ns,) = kinds(docs, "Namespace")
        assert all(
            d["metadata"].get("namespace") == ns for d in docs if d["kind"] != "Namespace"
        ), "every object of an overlay lives in its namespace"


@pytest.mark.parametrize("target", TARGETS)
def test_every_kubernetes_object_validates_against_the_schemas(builds: Builds, target: str) -> None:
    checked = 0
    for doc in builds[target]:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: test_scaled_objects_validate_against_the_keda_crd
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {exc}"
                )
            checked += 1
    assert checked >= 10 * len(K8S_VERSIONS)


def test_schema_validation_rejects_a_misspelt_field(builds: Builds) -> None:
    dep = deployment(builds["base"], "route")
    broken = {**dep, "spec": {**dep["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_scaled_objects_validate_against_the_keda_crd(builds: Builds, target: str) -> None:
    schema = keda_schema()
    validator = jsonschema.Draft7Validator(schema)
    for name, so in kinds(builds[target], "ScaledObject").items():
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(so)]
        assert errors == [], f"ScaledObject {name}"
        spec_schema = schema["properties"]["spec"]
        assert pruned(spec_schema, so["spec"], "spec") == [], f"ScaledObject {name}: unknown fields"
        for trigger in so["spec"]["triggers"]:
            unknown = set(trigger["metadata"]) - KAFKA_SCALER_KEYS
            assert not unknown, f"ScaledObject {name}: unknown kafka scaler keys {unknown}"


def test_the_keda_checks_catch_a_broken_scaled_object(builds: Builds) -> None:
    schema = keda_schema()
    so = kinds(builds["base"], "ScaledObject")["tidings-route"]
    not_a_string: Obj = {"type": "kafka", "metadata": {**so["spec"]["triggers"][0]["metadata"]}}
    not_a_string["metadata"]["lagThreshold"] = 2000
    broken = {**so, "spec": {**so["spec"], "triggers": [not_a_string]}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))
    misspelt = {**so["spec"], "maxReplicasCount": 3}
    assert pruned(schema["properties"]["spec"], misspelt, "spec") == ["spec.maxReplicasCount"]


# ---------------------------------------------------------------- KEDA: groups and partitions


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("stage", CONSUMER_STAGES)
def test_scaled_object_scales_the_stage_on_its_group_within_its_partitions(
    builds: Builds, target: str, stage: str
) -> None:
    docs = builds[target]
    s = settings_of(docs, stage)
    so = kinds(docs, "ScaledObject")[f"tidings-{stage}"]
    spec = so["spec"]
    ref = spec["scaleTargetRef"]
    assert ref.get("kind", "Deployment") == "Deployment"
    assert ref["name"] == f"tidings-{stage}"
    dep = deployment(docs, stage)
    assert "replicas" not in dep["spec"], "the ScaledObject owns the replica count"

    inputs = input_topics(stage, s)
    # More members than partitions sit idle: the cap is the smallest input topic.
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= min(inputs.values()), (
        f"{target} {stage}: replicas {spec['minReplicaCount']}..{spec['maxReplicaCount']}, "
        f"input partitions {inputs}"
    )
    env = container_env(docs, container(dep))
    topics = []
    for trigger in spec["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["consumerGroup"] == group_of(stage, s)
        assert meta["topic"] in inputs, f"{stage} trigger on {meta['topic']}: not an input"
        # One source for the address: the variable tidings itself reads, from the target.
        assert meta["bootstrapServersFromEnv"] == "TIDINGS_KAFKA__BOOTSTRAP_SERVERS"
        assert env["TIDINGS_KAFKA__BOOTSTRAP_SERVERS"] == s.kafka.bootstrap_servers
        assert int(meta["lagThreshold"]) > 0
        assert meta.get("offsetResetPolicy") == "earliest", (
            "tidings reads new groups from the start"
        )
        assert meta.get("allowIdleConsumers", "false") == "false"
        topics.append(meta["topic"])
    assert len(topics) == len(set(topics))
    if stage == "deliver":
        # Every dispatch topic; no retry tier (parked records are not work to scale for).
        assert set(topics) == {s.topics.dispatch(c) for c in CHANNELS}
    else:
        assert set(topics) == set(inputs)


def test_callbacks_is_not_autoscaled(builds: Builds) -> None:
    for docs in builds.values():
        targets = {
            so["spec"]["scaleTargetRef"]["name"] for so in kinds(docs, "ScaledObject").values()
        }
        assert "tidings-callbacks" not in targets
        assert deployment(docs, "callbacks")["spec"]["replicas"] >= 1


def test_dev_runs_one_member_per_stage_and_prod_at_least_two(builds: Builds) -> None:
    for stage in CONSUMER_STAGES:
        dev = kinds(builds["overlays/dev"], "ScaledObject")[f"tidings-{stage}"]["spec"]
        prod = kinds(builds["overlays/prod"], "ScaledObject")[f"tidings-{stage}"]["spec"]
        assert (dev["minReplicaCount"], dev["maxReplicaCount"]) == (1, 1)
        assert prod["minReplicaCount"] >= 2
    prod_settings = settings_of(builds["overlays/prod"])
    assert prod_settings.topics.partitions > settings_of(builds["base"]).topics.partitions
    assert prod_settings.kafka.replication_factor >= 3


# ---------------------------------------------------------------- Deployments and PDBs


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("stage", STAGES)
def test_stage_deployment_invariants(builds: Builds, target: str, stage: str) -> None:
    docs = builds[target]
    dep = deployment(docs, stage)
    pod = dep["spec"]["template"]["spec"]
    ctr = container(dep)
    s = settings_of(docs, stage)

    assert ctr["args"] == ["run", "--stage", stage]
    assert "command" not in ctr, "the image's entrypoint is tidings"

    # Non-root, no privilege, read-only root filesystem.
    psc, csc = pod["securityContext"], ctr["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] != 0 and psc.get("runAsGroup", 1) != 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False

    # Probes on the observe server's port, named for a PodMonitor.
    env = container_env(docs, ctr)
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert env["TIDINGS_OBSERVE__HOST"] == "0.0.0.0"
    assert ports["metrics"] == int(env["TIDINGS_OBSERVE__PORT"])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert ctr[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    assert ctr["startupProbe"]["httpGet"]["path"] == "/healthz"
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == env["TIDINGS_OBSERVE__PORT"]
    assert env["TIDINGS_LOG__FORMAT"] == "json"

    # The grace period outlasts the stop bound (3 * drain_timeout_s + 20 s: docs/operations.md).
    stop_bound = 3 * s.runtime.drain_timeout_s + 20
    assert pod["terminationGracePeriodSeconds"] > stop_bound

    # Requests for the scheduler, a memory limit against a leak taking the node.
    res = ctr["resources"]
    assert {"cpu", "memory"} <= set(res["requests"])
    assert "memory" in res["limits"]

    # The member identity is the pod name; secrets only by reference.
    by_name = {v["name"]: v for v in ctr["env"]}
    assert by_name["TIDINGS_RUNTIME__INSTANCE_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    for secret in ("TIDINGS_POSTGRES__PASSWORD", "TIDINGS_REDIS__URL"):
        assert "secretKeyRef" in by_name[secret]["valueFrom"], secret
        assert secret not in env, f"{secret} must come from a Secret, not a plain value"

    # runtime.local_dir on a writable emptyDir; the catalog from its ConfigMap, read-only.
    mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[str(s.runtime.local_dir)]["name"]]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]], "a writable /tmp under a read-only root"
    catalog_mount = mounts[str(s.catalog.path)]
    assert str(s.catalog.path) == "/etc/tidings/catalog"
    assert catalog_mount["readOnly"] is True
    assert volumes[catalog_mount["name"]]["configMap"]["name"].startswith("tidings-catalog-")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_a_pdb_selecting_exactly_its_pods(
    builds: Builds, target: str, stage: str
) -> None:
    docs = builds[target]
    pdb = kinds(docs, "PodDisruptionBudget")[f"tidings-{stage}"]
    labels = deployment(docs, stage)["spec"]["template"]["metadata"]["labels"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    others = [deployment(docs, o) for o in STAGES if o != stage]
    for other in others:
        assert not selector.items() <= other["spec"]["template"]["metadata"]["labels"].items()
    # maxUnavailable, not minAvailable: a one-member stage still lets a node drain.
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("stage", ["callbacks", "gateway"])
def test_an_http_stage_listens_on_all_interfaces_behind_its_service(
    builds: Builds, stage: str
) -> None:
    for docs in builds.values():
        s = getattr(settings_of(docs, stage), stage)
        assert s.host == "0.0.0.0"
        ports = {p["name"]: p["containerPort"] for p in container(deployment(docs, stage))["ports"]}
        assert ports[stage] == s.port
        svc = kinds(docs, "Service")[f"tidings-{stage}"]
        assert svc["spec"]["selector"].items() <= (
            deployment(docs, stage)["spec"]["template"]["metadata"]["labels"].items()
        )
        assert svc["spec"]["ports"][0]["targetPort"] == stage


@pytest.mark.parametrize("target", TARGETS)
def test_setup_job_ensures_topics_then_migrates(builds: Builds, target: str) -> None:
    docs = builds[target]
    pod = kinds(docs, "Job")["tidings-setup"]["spec"]["template"]["spec"]
    assert [c["args"] for c in pod["initContainers"]] == [["topics", "ensure"]]
    assert [c["args"] for c in pod["containers"]] == [["db", "migrate"]]
    image = container(deployment(docs, "route"))["image"]
    for ctr in pod["initContainers"] + pod["containers"]:
        assert ctr["image"] == image
        assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
        # The same settings as the stages: same topics, same partitions, same database.
        assert container_env(docs, ctr) == {
            k: v
            for k, v in container_env(docs, container(deployment(docs, "route"))).items()
            if k in config_env(docs)
        }
    assert pod["securityContext"]["runAsNonRoot"] is True


# ---------------------------------------------------------------- settings and secrets


@pytest.mark.parametrize("target", TARGETS)
def test_every_tidings_variable_names_a_real_setting(builds: Builds, target: str) -> None:
    docs = builds[target]
    names = all_tidings_env_names(docs)
    assert "TIDINGS_KAFKA__BOOTSTRAP_SERVERS" in names
    # tidings ignores a variable whose section doesn't exist: a typo would do nothing.
    assert sorted(n for n in names if not setting_exists(n)) == []
    for stage in STAGES:
        settings_of(docs, stage)  # the values parse (pydantic would raise)


def test_setting_check_catches_typos() -> None:
    assert setting_exists("TIDINGS_KAFKA__BOOTSTRAP_SERVERS")
    assert setting_exists("TIDINGS_ROUTE__LIMITS__MAX_BYTES")
    assert not setting_exists("TIDINGS_KAFKA__BOOTSTRAP_SERVER")
    assert not setting_exists("TIDINGS_KAFKAS__BOOTSTRAP_SERVERS")
    assert not setting_exists("TIDINGS_OBSERVE__PROT")
    assert setting_exists("TIDINGS_OBSERVE__OTLP_ENDPOINT")
    assert setting_exists("TIDINGS_LOG__FORMAT")


@pytest.mark.parametrize("target", TARGETS)
def test_secret_references(builds: Builds, target: str) -> None:
    docs = builds[target]
    secrets = kinds(docs, "Secret")
    refs = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            spec = doc["spec"]["template"]["spec"]
            for ctr in spec.get("initContainers", []) + spec["containers"]:
                refs += [
                    v["valueFrom"]["secretKeyRef"]
                    for v in ctr.get("env", [])
                    if "secretKeyRef" in v.get("valueFrom", {})
                ]
    assert refs
    for ref in refs:
        if target == "overlays/dev":
            # dev generates its Secret: every required key is in it.
            assert ref["name"] in secrets, ref
            if not ref.get("optional"):
                assert ref["key"] in secrets[ref["name"]]["data"], ref
        else:
            # base and prod expect the Secret tidings-secrets to exist (docs/deploy.md).
            assert ref["name"] == "tidings-secrets" and not secrets, ref


# ---------------------------------------------------------------- the catalog ConfigMap


def catalog_files(docs: list[Obj]) -> dict[str, str]:
    """The catalog as the pods see it: mounted path -> content (from the volume's items)."""
    dep = deployment(docs, "route")
    (volume,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "catalog"]
    cm = kinds(docs, "ConfigMap")[volume["configMap"]["name"]]
    items = volume["configMap"]["items"]
    keys = [i["key"] for i in items]
    assert sorted(keys) == sorted(cm["data"]), "every catalog key mounted, and only those"
    for item in items:
        assert item["path"] == item["key"].replace("--", "/")
    for other in STAGES:
        vols = deployment(docs, other)["spec"]["template"]["spec"]["volumes"]
        assert [v for v in vols if v["name"] == "catalog"] == [volume]
    return {i["path"]: cm["data"][i["key"]] for i in items}


@pytest.mark.parametrize("target", TARGETS)
def test_the_mounted_catalog_loads(builds: Builds, target: str, tmp_path: Path) -> None:
    for path, text in catalog_files(builds[target]).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    catalog = load_catalog(tmp_path)
    s = settings_of(builds[target])
    listened = {event for rule in catalog.rules for event in rule.events}
    assert set(s.topics.events) <= listened, "a rule for every event topic route reads"


def test_the_catalog_loads_from_a_configmap_volume_as_the_kubelet_lays_it_out(
    builds: Builds,
) -> None:
    # The kubelet writes a ConfigMap volume into a timestamped directory, points `..data` at
    # it and links each top-level name to `..data/<name>`: `templates` is a symlink to a
    # directory. The catalog must load through it.
    files = catalog_files(builds["base"])
    with tempfile.TemporaryDirectory() as tmp:
        mount = Path(tmp) / "catalog"
        real = mount / "..2026_01_01_00_00_00.000000000"
        for path, text in files.items():
            (real / path).parent.mkdir(parents=True, exist_ok=True)
            (real / path).write_text(text)
        (mount / "..data").symlink_to(real.name)
        for top in sorted({p.split("/")[0] for p in files}):
            (mount / top).symlink_to(f"..data/{top}")
        catalog = load_catalog(mount)
        assert {rule.id for rule in catalog.rules} == {"order-confirmation", "welcome"}
