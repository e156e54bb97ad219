"""Kubernetes manifests: every rendering passes the API server's strict schema, for several versions."""

from __future__ import annotations

import pytest

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]'")

from kubetrain.core.attempts import LaunchOrder  # noqa: E402
from kubetrain.core.specs import validate_job  # noqa: E402
from kubetrain.engines.kubernetes.manifests import (  # noqa: E402
    KubernetesSettings,
    object_name,
    render_job,
)

#: The oldest Kubernetes still widely run, a middle one, and the newest the validator knows.
VERSIONS = ("1.29.0", "1.33.0", kubernetes_validate.utils.latest_version())
TOKEN = "t" * 32


def job(**body) -> dict:
    spec = {"command": ["python", "train.py"], "args": ["--epochs", "3"]}
    spec.update(body)
    return validate_job({"apiVersion": "kubetrain/v1", "kind": "Job", "metadata": {"name": "digits"}, "spec": spec})


def render(spec, number: int = 1, settings: KubernetesSettings | None = None, name: str = "digits") -> dict:
    order = LaunchOrder(job=name, number=number, token=TOKEN, spec=spec.to_document(), node="node-a", gpus=())
    return render_job(order, spec, settings or KubernetesSettings(namespace="ml", master_url="http://master:8080"))


def container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def env(manifest: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(manifest)["env"] if "value" in e}


SPECS = {
    "plain": job(),
    "everything": job(
        resources={"cpu": "1500m", "memory": "6Gi", "gpu": 2},
        selector="gpu-type=a100,zone in (a, b),!spot,tier notin (low),fast",
        env={"WANDB_MODE": "offline"}, params={"lr": 0.01, "model.depth": 4, "name": "x"},
        priority=500, activeDeadlineSeconds=3600, workingDir="src",
        snapshot="sha256:" + "a" * 64, image="registry.example/ml/train:1.4",
        volumes=[{"name": "datasets", "mountPath": "/data", "readOnly": True, "subPath": "digits"},
                 {"name": "scratch", "mountPath": "/scratch"}],
    ),
    "shell": job(command=["echo $HOME && python train.py"], args=[], shell=True),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", sorted(SPECS))
def test_every_manifest_is_valid_for_the_api_server_strictly(case: str, version: str) -> None:
    settings = KubernetesSettings(namespace="ml", master_url="http://master:8080", results_claim="results",
                                  service_account="trainer", priority_classes=((100, "high"),),
                                  tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},))
    kubernetes_validate.validate(render(SPECS[case], settings=settings), version, strict=True)


def test_a_validator_that_can_fail_does_fail() -> None:
    manifest = render(job())
    container(manifest)["resource"] = container(manifest).pop("resources")  # a typo Kubernetes would drop silently
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, VERSIONS[-1], strict=True)


def test_one_job_per_attempt_that_kubernetes_never_retries() -> None:
    manifest = render(job(), number=3)
    assert manifest["metadata"]["name"] == "digits-3"
    assert manifest["metadata"]["namespace"] == "ml"
    assert manifest["spec"]["backoffLimit"] == 0
    assert manifest["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    labels = {"kubetrain.io/job": "digits", "kubetrain.io/attempt": "3", "kubetrain.io/master": "kubetrain"}
    assert manifest["metadata"]["labels"] == labels == manifest["spec"]["template"]["metadata"]["labels"]
    assert container(manifest)["command"] == ["python"] and container(manifest)["args"] == ["train.py", "--epochs", "3"]


def test_requests_equal_limits_including_gpus() -> None:
    resources = container(render(job(resources={"cpu": "1500m", "memory": "6Gi", "gpu": 2})))["resources"]
    assert resources["limits"] == resources["requests"] == {"cpu": "1500m", "memory": str(6 * 2**30), "nvidia.com/gpu": "2"}
    assert "nvidia.com/gpu" not in container(render(job()))["resources"]["limits"]


def test_selector_becomes_node_selector_and_required_affinity() -> None:
    pod = render(SPECS["everything"])["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu-type": "a100"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["a", "b"]},
        {"key": "spot", "operator": "DoesNotExist"},
        {"key": "tier", "operator": "NotIn", "values": ["low"]},
        {"key": "fast", "operator": "Exists"},
    ]}]
    assert "affinity" not in render(job(selector="a=b"))["spec"]["template"]["spec"]


def test_volumes_are_claims_and_shm_is_sized_to_the_memory_limit() -> None:
    manifest = render(SPECS["everything"], settings=KubernetesSettings(results_claim="results"))
    pod = manifest["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert sorted(claims.values()) == ["datasets", "results", "scratch"]
    mounts = {m["mountPath"]: m for m in container(manifest)["volumeMounts"]}
    assert mounts["/data"]["readOnly"] is True and mounts["/data"]["subPath"] == "digits"
    assert mounts["/kubetrain/output"]["subPath"] == "digits"  # outputs: <results claim>/<job>/
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": str(6 * 2**30)}
    assert mounts["/dev/shm"]["name"] == "dshm"
    assert env(manifest)["KUBETRAIN_VOLUME_DATASETS"] == "/data"


def test_the_job_sees_the_same_variables_as_on_the_embedded_engine() -> None:
    variables = env(render(SPECS["everything"]))
    assert variables["KUBETRAIN_JOB"] == "digits" and variables["KUBETRAIN_ATTEMPT"] == "1"
    assert "KUBETRAIN_JOB_TOKEN" not in variables  # from the attempt's Secret, see below
    assert variables["KUBETRAIN_PARAM_LR"] == "0.01" and variables["KUBETRAIN_PARAM_MODEL_DEPTH"] == "4"
    assert variables["KUBETRAIN_PARAM_NAME"] == "x"
    assert variables["KUBETRAIN_OUTPUT_DIR"] == "/kubetrain/output"
    assert variables["KUBETRAIN_CHECKPOINT_DIR"] == "/kubetrain/output/checkpoints"
    assert variables["KUBETRAIN_MASTER_URL"] == "http://master:8080"
    assert variables["WANDB_MODE"] == "offline"
    assert "CUDA_VISIBLE_DEVICES" not in variables  # the device plugin sets it on Kubernetes


def test_a_snapshot_is_fetched_by_an_init_container_with_the_job_token() -> None:
    manifest = render(SPECS["everything"])
    pod = manifest["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    init_env = {e["name"]: e.get("value") or e["valueFrom"] for e in init["env"]}
    assert init_env["KUBETRAIN_SNAPSHOT_URL"] == "http://master:8080/api/v1/jobs/digits/snapshot"
    assert init_env["KUBETRAIN_JOB_TOKEN"] == {"secretKeyRef": {"name": "digits-1-token", "key": "token"}}
    assert init["image"] == container(manifest)["image"] == "registry.example/ml/train:1.4"
    assert container(manifest)["workingDir"] == "/kubetrain/code/src"
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/kubetrain/code", "/kubetrain/sdk"}


def test_every_job_gets_the_sdk_from_the_init_container_first_on_its_pythonpath() -> None:
    """Any image with python3 works: the SDK comes from the master, even for a job without a snapshot."""
    manifest = render(job(env={"PYTHONPATH": "/opt/lib"}))
    (init,) = manifest["spec"]["template"]["spec"]["initContainers"]
    init_env = {e["name"]: e.get("value") or e["valueFrom"] for e in init["env"]}
    assert init_env["KUBETRAIN_SDK_URL"] == "http://master:8080/api/v1/jobs/digits/sdk"
    assert init_env["KUBETRAIN_SDK_DIR"] == "/kubetrain/sdk" and "KUBETRAIN_SNAPSHOT_URL" not in init_env
    assert init["command"][:2] == ["python3", "-c"]
    assert env(manifest)["PYTHONPATH"] == "/kubetrain/sdk:/opt/lib"
    assert env(render(job()))["PYTHONPATH"] == "/kubetrain/sdk"
    sdk = {m["mountPath"]: m for m in container(manifest)["volumeMounts"]}["/kubetrain/sdk"]
    assert sdk["readOnly"] is True  # the job cannot change the SDK it reports with
    # Without a URL pods could not reach the master: no init container, and PYTHONPATH as the spec says.
    alone = render(job(env={"PYTHONPATH": "/opt/lib"}), settings=KubernetesSettings(namespace="ml"))
    assert "initContainers" not in alone["spec"]["template"]["spec"]
    assert env(alone)["PYTHONPATH"] == "/opt/lib"


def test_outputs_always_go_to_the_results_claim_never_an_emptydir() -> None:
    trial = job()
    trial.metadata.labels["kubetrain.io/experiment"] = "sweep"
    for spec, sub_path in ((job(), "digits"), (trial, "sweep/digits")):
        manifest = render(spec, settings=KubernetesSettings(namespace="ml"))
        volumes = {v["name"]: v for v in manifest["spec"]["template"]["spec"]["volumes"]}
        assert volumes["output"] == {"name": "output", "persistentVolumeClaim": {"claimName": "kubetrain-results"}}
        mount = {m["mountPath"]: m for m in container(manifest)["volumeMounts"]}["/kubetrain/output"]
        assert mount["subPath"] == sub_path
        assert env(manifest)["KUBETRAIN_CHECKPOINT_DIR"] == "/kubetrain/output/checkpoints"  # on the claim too


@pytest.mark.parametrize("version", VERSIONS)
def test_the_results_claim_is_valid_labelled_as_ours_and_configurable(version: str) -> None:
    from kubetrain.engines.kubernetes.manifests import render_results_claim

    claim = render_results_claim(KubernetesSettings(namespace="ml", master_id="kt-1"))
    kubernetes_validate.validate(claim, version, strict=True)
    assert claim["metadata"]["name"] == "kubetrain-results"
    assert claim["metadata"]["labels"] == {"kubetrain.io/master": "kt-1", "kubetrain.io/results": "true"}
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}
    shared = render_results_claim(KubernetesSettings(results_claim="out", results_access_mode="ReadWriteMany",
                                                     results_storage_class="nfs", results_size="1Ti"))
    kubernetes_validate.validate(shared, version, strict=True)
    assert shared["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}},
                              "storageClassName": "nfs"}


@pytest.mark.parametrize("version", VERSIONS)
def test_kueue_mode_submits_suspended_jobs_labelled_with_the_local_queue(version: str) -> None:
    settings = KubernetesSettings(namespace="ml", master_url="http://master:8080", kueue_queue="team-a")
    for spec in (SPECS["everything"], job(replicas=2)):
        manifest = render(spec, settings=settings)
        kubernetes_validate.validate(manifest, version, strict=True)
        assert manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        assert manifest["spec"]["suspend"] is True
        # On the Job only: Kueue reads the Job's label; the pods keep exactly our own labels.
        assert "kueue.x-k8s.io/queue-name" not in manifest["spec"]["template"]["metadata"]["labels"]
    plain = render(job())
    assert "suspend" not in plain["spec"] and "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]


@pytest.mark.parametrize(("mode", "nodes", "refused"), [
    ("ReadWriteOnce", 1, False), ("ReadWriteOnce", 3, True), ("ReadWriteMany", 3, False),
    ("ReadWriteOncePod", 1, True)])
def test_a_gang_on_a_results_claim_one_node_at_a_time_is_refused_with_the_fix(mode: str, nodes: int,
                                                                               refused: bool) -> None:
    from kubetrain.core.errors import SpecError
    from kubetrain.engines.kubernetes.manifests import check_results_access

    settings = KubernetesSettings(results_access_mode=mode)
    check_results_access(settings, job(), schedulable_nodes=nodes)  # one pod: always fine
    if not refused:
        check_results_access(settings, job(replicas=2), schedulable_nodes=nodes)
        return
    with pytest.raises(SpecError, match="resultsAccessMode: ReadWriteMany") as caught:
        check_results_access(settings, job(replicas=2), schedulable_nodes=nodes)
    assert caught.value.details == {"field": "spec.replicas", "value": 2}


def test_deadline_image_default_shell_and_priority_class() -> None:
    settings = KubernetesSettings(priority_classes=((0, "normal"), (100, "high")))
    assert render(SPECS["everything"], settings=settings)["spec"]["activeDeadlineSeconds"] == 3600
    assert render(SPECS["everything"], settings=settings)["spec"]["template"]["spec"]["priorityClassName"] == "high"
    assert render(job(), settings=settings)["spec"]["template"]["spec"]["priorityClassName"] == "normal"
    assert "priorityClassName" not in render(job(priority=-5), settings=settings)["spec"]["template"]["spec"]
    assert container(render(job()))["image"] == KubernetesSettings().image
    shell = container(render(SPECS["shell"]))
    assert shell["command"] == ["/bin/sh"] and shell["args"] == ["-c", "echo $HOME && python train.py"]


@pytest.mark.parametrize("name", ["a" * 63, "b" * 60, "x"])
def test_object_names_stay_valid_dns_labels_and_distinct(name: str) -> None:
    names = {object_name(name, n) for n in (1, 2, 10, 999)}
    assert len(names) == 4
    for value in names:
        assert len(value) <= 63 and value[0].isalnum() and value[-1].isalnum(), value


def test_settings_come_from_config_then_environment_and_unknown_keys_are_refused(tmp_path) -> None:
    from kubetrain.core.errors import ConfigError
    from kubetrain.engines.kubernetes.config import kubernetes_settings
    from kubetrain.settings import load_settings

    (tmp_path / "config.yaml").write_text(
        "engine: kubernetes\nkubernetes:\n  namespace: ml\n  image: train:1\n  priorityClasses: {high: 100, normal: 0}\n")
    settings = load_settings({"KUBETRAIN_HOME": str(tmp_path)})
    assert settings.engine == "kubernetes"
    k8s = kubernetes_settings(settings, {"KUBETRAIN_K8S_IMAGE": "train:2"}, master_url=None)
    assert (k8s.namespace, k8s.image, k8s.priority_classes) == ("ml", "train:2", ((0, "normal"), (100, "high")))
    other = load_settings({"KUBETRAIN_HOME": str(tmp_path), "KUBETRAIN_DATABASE_URL": "sqlite:////elsewhere.db"})
    assert kubernetes_settings(other, {}, master_url=None).master_id != k8s.master_id  # masters never share objects
    rotated = load_settings({"KUBETRAIN_HOME": str(tmp_path), "KUBETRAIN_DATABASE_URL": "postgresql://u:new@db/kt"})
    original = load_settings({"KUBETRAIN_HOME": str(tmp_path), "KUBETRAIN_DATABASE_URL": "postgresql://u:old@db/kt"})
    assert kubernetes_settings(rotated, {}, master_url=None).master_id == kubernetes_settings(
        original, {}, master_url=None).master_id  # a new password does not orphan running Jobs
    (tmp_path / "config.yaml").write_text("kubernetes:\n  masterId: 'not a label!'\n")
    with pytest.raises(ConfigError, match="masterId"):
        kubernetes_settings(load_settings({"KUBETRAIN_HOME": str(tmp_path)}), {}, master_url=None)
    assert (k8s.results_claim, k8s.results_access_mode, k8s.volume_access_mode) == (
        "kubetrain-results", "ReadWriteOnce", "ReadWriteOnce")
    (tmp_path / "config.yaml").write_text("kubernetes:\n  resultsAccessMode: ReadWriteMany\n  resultsSize: 1Ti\n"
                                          "  resultsMountPath: /results\n  kueueQueue: team-a\n")
    shared = kubernetes_settings(load_settings({"KUBETRAIN_HOME": str(tmp_path)}), {}, master_url=None)
    assert (shared.results_access_mode, shared.results_size, shared.results_mount_path, shared.kueue_queue) == (
        "ReadWriteMany", "1Ti", "/results", "team-a")
    for field, value in (("resultsAccessMode", "ReadWriteAll"), ("volumeAccessMode", "RWX"),
                         ("kueueQueue", "Team A"), ("resultsSize", "lots"), ("resultsMountPath", "results")):
        (tmp_path / "config.yaml").write_text(f"kubernetes:\n  {field}: {value}\n")
        with pytest.raises(ConfigError, match=f"kubernetes.{field}"):
            kubernetes_settings(load_settings({"KUBETRAIN_HOME": str(tmp_path)}), {}, master_url=None)
    (tmp_path / "config.yaml").write_text("kubernetes:\n  namespce: ml\n")
    with pytest.raises(ConfigError, match="namespce"):
        kubernetes_settings(load_settings({"KUBETRAIN_HOME": str(tmp_path)}), {}, master_url=None)
    with pytest.raises(ConfigError, match="kubernetes"):
        load_settings({"KUBETRAIN_HOME": str(tmp_path), "KUBETRAIN_ENGINE": "nomad"})


@pytest.mark.parametrize("version", VERSIONS)
def test_volume_claims_are_valid_and_labelled_as_ours(version: str) -> None:
    from kubetrain.engines.kubernetes.manifests import render_claim

    settings = KubernetesSettings(namespace="ml", master_id="kt-1", storage_class="nfs")
    claim = render_claim("datasets", 5 * 2**30, settings)
    kubernetes_validate.validate(claim, version, strict=True)
    assert claim["spec"]["resources"]["requests"]["storage"] == str(5 * 2**30)
    # ReadWriteOnce by default: ReadWriteMany fails to provision on many default storage classes.
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["storageClassName"] == "nfs"
    assert claim["metadata"]["labels"]["kubetrain.io/master"] == "kt-1"
    assert render_claim("d", None, KubernetesSettings())["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in render_claim("d", None, KubernetesSettings())["spec"]


@pytest.mark.parametrize("version", VERSIONS)
def test_the_job_token_travels_in_a_secret_never_in_the_job(version: str) -> None:
    import base64
    import json

    from kubetrain.engines.kubernetes.manifests import render_secret

    order = LaunchOrder(job="digits", number=2, token=TOKEN, spec=SPECS["everything"].to_document(), node="", gpus=())
    secret = render_secret(order, KubernetesSettings(namespace="ml"))
    kubernetes_validate.validate(secret, version, strict=True)
    assert secret["metadata"]["name"] == "digits-2-token"
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    manifest = render(SPECS["everything"], number=2)
    assert TOKEN not in json.dumps(manifest)
    refs = [e["valueFrom"]["secretKeyRef"] for e in container(manifest)["env"] if "valueFrom" in e]
    assert refs == [{"name": "digits-2-token", "key": "token"}]


def test_unreadable_cluster_credentials_are_a_config_error_naming_the_file(tmp_path) -> None:
    from kubetrain.core.errors import ConfigError
    from kubetrain.engines.kubernetes.engine import connect

    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\ncurrent-context: nowhere\n")
    with pytest.raises(ConfigError, match="kubeconfig"):
        connect(str(broken))
    with pytest.raises(ConfigError, match="missing"):
        connect(str(tmp_path / "missing"))


@pytest.mark.parametrize("version", VERSIONS)
def test_secret_values_and_the_submitters_uid_reach_the_pod_but_not_the_job_object(version: str) -> None:
    import base64
    import json

    from kubetrain.core.attempts import RunAs
    from kubetrain.engines.kubernetes.manifests import render_secret

    spec = job(env=[{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}])
    order = LaunchOrder(job="digits", number=1, token=TOKEN, spec=spec.to_document(), node="", gpus=(),
                        run_as=RunAs("alice", 1001, 1001), secret_env={"HF_TOKEN": "v4lue"})
    settings = KubernetesSettings(namespace="ml", master_url="http://master:8080")
    manifest = render_job(order, spec, settings)
    secret = render_secret(order, settings)
    for document in (manifest, secret):
        kubernetes_validate.validate(document, version, strict=True)
    assert "v4lue" not in json.dumps(manifest)
    assert base64.b64decode(secret["data"]["env-HF_TOKEN"]).decode() == "v4lue"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container(manifest)["env"] if "valueFrom" in e}
    assert refs["HF_TOKEN"] == {"name": "digits-1-token", "key": "env-HF_TOKEN"}
    pod = manifest["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsUser": 1001, "runAsGroup": 1001, "runAsNonRoot": True}
    assert container(manifest)["securityContext"] == {"allowPrivilegeEscalation": False}
