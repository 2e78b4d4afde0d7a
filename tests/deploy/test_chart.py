"""The Helm chart: lint, schema, Kubernetes API validity, and the properties the chart promises."""

from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import CHART, RELEASE, VALUE_SETS, load_values, render

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency (pip install -e '.[dev]')")

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is a dev dependency")
from kubernetes_validate import utils as kv_utils  # noqa: E402

KUBE_VERSIONS = ["1.29.0", "1.33.0"]
# Custom resources kubernetes-validate has no schema for; their validation is skipped on purpose.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
WORKLOADS = {"Deployment", "StatefulSet"}
GPU_SERVICES = {"activation", "training", "tracing"}
SERVICE_PORTS = {"activation": 50051, "training": 50052, "analysis": 50053, "tracing": 50054}


def workloads(manifests):
    return [m for m in manifests if m["kind"] in WORKLOADS]


def containers(manifests):
    for w in workloads(manifests):
        spec = w["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield w, spec, c


def component(obj) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


# --- Helm itself -------------------------------------------------------------------------------

@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint_strict(name, kube_version):
    report = helm.lint(CHART, load_values(name), strict=True, namespace="lm-saes", kube_version=f"v{kube_version}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings count (strict)
    assert not report["errors"] and not problems, report


def test_values_schema_accepts_ci_values_and_rejects_bad_ones(chart):
    for name in VALUE_SETS:
        chart.validate_schema(load_values(name))
    bad = [{"services": {"activation": {"gpu": "one"}}},
           {"unknownKey": 1},
           {"mongodb": {"enabled": False}},  # no document store at all
           {"minio": {"enabled": False}, "externalS3": {"endpoint": "s3.example.com"}}]  # no bucket/secret
    for values in bad:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(values)
        with pytest.raises(helm.HelmError):
            chart.render(values, name=RELEASE)


def test_notes_say_how_to_reach_the_ui(chart):
    assert "port-forward svc/lm-saes-gateway 8000:8000" in render(chart, "default")[1]
    assert "https://lm-saes.gpu.example.com/" in render(chart, "gpu")[1]


# --- Kubernetes API schemas ----------------------------------------------------------------------

def test_kubernetes_validate_has_the_versions():
    versions = kv_utils.all_versions()
    for wanted in KUBE_VERSIONS:
        assert wanted in versions, f"kubernetes-validate {kv.version.__version__} lacks {wanted}: {versions}"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_validates_strictly(manifests, kube_version):
    skipped = set()
    for m in manifests:
        key = (m["apiVersion"], m["kind"])
        if key in CRD_KINDS:
            with pytest.raises(kv_utils.SchemaNotFoundError):  # proves the skip is needed, not hiding errors
                kv_utils.validate(m, kube_version, strict=True)
            skipped.add(key)
            continue
        try:
            kv_utils.validate(m, kube_version, strict=True)
        except kv_utils.ValidationError as error:
            path = ".".join(map(str, error.path))
            pytest.fail(f"{m['kind']}/{m['metadata']['name']} invalid for {kube_version}: {path}: {error.message}")
    assert skipped <= CRD_KINDS


def test_kinds_rendered(chart):
    kinds = lambda name: {(m["kind"], m["metadata"]["name"]) for m in render(chart, name)[0]}  # noqa: E731
    default, gpu, external = kinds("default"), kinds("gpu"), kinds("external")
    for svc in ("activation", "training", "analysis", "gateway"):
        assert {("Deployment", f"lm-saes-{svc}"), ("Service", f"lm-saes-{svc}"),
                ("PodDisruptionBudget", f"lm-saes-{svc}"), ("NetworkPolicy", f"lm-saes-{svc}")} <= default
    assert ("HorizontalPodAutoscaler", "lm-saes-activation") in default
    assert {("StatefulSet", "lm-saes-mongodb"), ("StatefulSet", "lm-saes-minio")} <= default
    assert ("Deployment", "lm-saes-tracing") not in default and ("Deployment", "lm-saes-tracing") in gpu
    assert ("ServiceMonitor", "lm-saes") in gpu and ("Ingress", "lm-saes-gateway") in gpu
    assert not {k for k in external if k[1] in ("lm-saes-mongodb", "lm-saes-minio")}
    hpa = next(m for m in render(chart, "default")[0] if m["kind"] == "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["scaleTargetRef"]["name"] == "lm-saes-activation"


# --- Workloads -----------------------------------------------------------------------------------

def test_gpu_workloads_request_gpus(chart):
    manifests, seen = render(chart, "gpu")[0], set()
    for w, spec, c in containers(manifests):
        name = component(w)
        gpus = c["resources"]["limits"].get("nvidia.com/gpu")
        if name in GPU_SERVICES:
            seen.add(name)
            assert gpus == "1" and c["resources"]["requests"].get("nvidia.com/gpu") == "1", name
            assert spec["runtimeClassName"] == "nvidia"
            assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["LM_SAES_DEVICE"] == "cuda"
        else:
            assert gpus is None, name
    assert seen == GPU_SERVICES
    for w, _, c in containers(render(chart, "default")[0]):  # default values: CPU only
        assert "nvidia.com/gpu" not in c["resources"].get("limits", {}), component(w)


def test_every_container_has_probes_resources_and_runs_non_root(manifests, value_set):
    for w, spec, c in containers(manifests):
        where = f"{w['kind']}/{w['metadata']['name']}/{c['name']}"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert probe in c, f"{where}: no {probe}"
        assert c["resources"].get("requests") and c["resources"].get("limits"), f"{where}: resources"
        assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0, where
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert "/tmp" in {m["mountPath"] for m in c.get("volumeMounts", [])}, f"{where}: no writable /tmp"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        # only a training service that creates Kubernetes Jobs (gpu values) needs its API token
        creates_jobs = value_set == "gpu" and component(w) == "training"
        assert spec.get("automountServiceAccountToken") is creates_jobs, where


def test_service_probes_are_grpc_and_startup_allows_model_loading(manifests):
    for w, _, c in containers(manifests):
        name = component(w)
        if name in SERVICE_PORTS:
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert c[probe]["grpc"]["port"] == SERVICE_PORTS[name], (name, probe)
            startup = c["startupProbe"]
            assert startup["failureThreshold"] * startup["periodSeconds"] >= 600, name
            assert c["securityContext"]["runAsUser"] == 10001
            assert {"mountPath": "/cache", "name": "cache"} in c["volumeMounts"]
        elif name == "gateway":
            env = {e["name"]: e for e in c["env"]}
            assert env["LM_SAES_GATEWAY_PORT"]["value"] == "8000"
            assert env["LM_SAES_ACTIVATION_ADDRESS"]["value"] == "lm-saes-activation:50051"
            assert "secretKeyRef" in env["LM_SAES_DOCUMENTS"]["valueFrom"]
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["ports"][0]["containerPort"] == 8000


def test_services_get_their_settings(chart, value_set, manifests):
    secrets_expected = {"default": ("lm-saes-mongodb", "lm-saes-minio"),
                        "gpu": ("lm-saes-mongodb", "lm-saes-minio"),
                        "external": ("lm-saes-mongodb-uri", "lm-saes-s3")}[value_set]
    for w, _, c in containers(manifests):
        name = component(w)
        if name not in SERVICE_PORTS:
            continue
        env = {e["name"]: e for e in c["env"]}
        assert env["LM_SAES_PORT"]["value"] == str(SERVICE_PORTS[name])
        assert env["LM_SAES_METRICS_PORT"]["value"] == "9090"
        assert env["LM_SAES_HOME"]["value"] == "/cache"
        assert re.fullmatch(r"s3://[a-z0-9.-]+/objects", env["LM_SAES_OBJECT_STORE"]["value"])
        assert env["LM_SAES_S3_ENDPOINT"]["value"] and env["LM_SAES_S3_SECURE"]["value"] in ("0", "1")
        assert env["LM_SAES_DOCUMENTS"]["valueFrom"]["secretKeyRef"]["name"] == secrets_expected[0]
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key]["valueFrom"]["secretKeyRef"]["name"] == secrets_expected[1]
    if value_set == "external":
        env = {e["name"]: e for _, _, c in containers(manifests) if c["name"] == "activation" for e in c["env"]}
        assert env["LM_SAES_OBJECT_STORE"]["value"] == "s3://lm-saes-artifacts/objects"
        assert env["LM_SAES_S3_ENDPOINT"]["value"] == "s3.eu-west-1.amazonaws.com"
        assert env["LM_SAES_S3_SECURE"]["value"] == "1"


# --- Credentials ---------------------------------------------------------------------------------

SENSITIVE_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|URI|DOCUMENTS|CREDENTIAL", re.I)
CREDENTIAL_VALUE = re.compile(r"://[^/@\s]+:[^/@\s]+@|(?i:password|secret|token)\s*[=:]")


def test_no_credential_outside_secrets(manifests):
    for m in manifests:
        if m["kind"] == "ConfigMap":
            for key, value in (m.get("data") or {}).items():
                assert not SENSITIVE_NAME.search(key) and not CREDENTIAL_VALUE.search(str(value)), (m["metadata"]["name"], key)
    for w, _, c in containers(manifests):
        for e in c.get("env", []):
            where = f"{w['metadata']['name']}/{c['name']} env {e['name']}"
            if SENSITIVE_NAME.search(e["name"]):
                assert "value" not in e and "secretKeyRef" in e["valueFrom"], f"{where}: must come from a Secret"
            assert not CREDENTIAL_VALUE.search(str(e.get("value", ""))), f"{where}: credential in a literal"
    for m in manifests:  # the gateway's API tokens live in a Secret it references
        if m["kind"] == "Deployment" and component(m) == "gateway":
            env = {e["name"]: e for e in m["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert "secretKeyRef" in env["LM_SAES_API_TOKENS"]["valueFrom"]


def test_in_chart_store_secret_holds_the_uri(chart):
    import base64
    import json

    secret = next(m for m in render(chart, "default")[0] if m["kind"] == "Secret" and m["metadata"]["name"] == "lm-saes-mongodb")
    uri = base64.b64decode(secret["data"]["uri"]).decode()
    assert re.fullmatch(r"mongodb://root:[A-Za-z0-9]{32}@lm-saes-mongodb\.lm-saes\.svc:27017/lm_saes\?authSource=admin", uri)
    tokens = next(m for m in render(chart, "default")[0] if m["metadata"]["name"] == "lm-saes-gateway-tokens")
    parsed = json.loads(base64.b64decode(tokens["data"]["tokens"]))  # LM_SAES_API_TOKENS: {token: scopes}
    assert len(parsed) == 1 and list(parsed.values()) == [["read", "compute", "submit"]]


# --- NetworkPolicies -----------------------------------------------------------------------------

def peer_key(peer: dict) -> tuple:
    """A NetworkPolicy peer as (namespace labels, pod role/component) for comparison."""
    ns = peer.get("namespaceSelector")
    pods = (peer.get("podSelector") or {}).get("matchLabels", {})
    if pods:
        assert pods.get("app.kubernetes.io/instance") == RELEASE and ns is None, peer
    return (tuple(sorted((ns or {}).get("matchLabels", {}).items())) if ns is not None else None,
            pods.get("lm-saes.io/role"))


def admitted(manifests) -> dict[str, set[tuple]]:
    """component -> {(peer, port)} from every NetworkPolicy, checked to select exactly one component."""
    pods = {component(m): m["spec"]["template"]["metadata"]["labels"] for m in workloads(manifests)}
    flows: dict[str, set[tuple]] = {}
    for np in (m for m in manifests if m["kind"] == "NetworkPolicy"):
        selector = np["spec"]["podSelector"]["matchLabels"]
        selected = [name for name, labels in pods.items() if selector.items() <= labels.items()]
        assert len(selected) == 1, (np["metadata"]["name"], selected)
        assert np["spec"]["policyTypes"] == ["Ingress"]
        rules = flows.setdefault(selected[0], set())
        for rule in np["spec"]["ingress"]:
            for peer in rule["from"]:
                for port in rule["ports"]:
                    rules.add((peer_key(peer), port["port"]))
    assert set(pods) == set(flows), f"pods without a NetworkPolicy: {set(pods) - set(flows)}"
    return flows


def test_network_policies_admit_exactly_the_intended_flows(chart, value_set, manifests):
    flows = admitted(manifests)
    ingress_ns = (("kubernetes.io/metadata.name", "ingress-nginx"),)
    monitoring = ((("kubernetes.io/metadata.name", "monitoring"),), None) if value_set == "gpu" else None
    expected = {"gateway": {((ingress_ns, None), 8000)}}
    for name, port in SERVICE_PORTS.items():
        if name in flows:
            expected[name] = {((None, "gateway"), port), ((None, "service"), port)}
    if value_set != "external":  # the gateway reads the document store, never the object store
        expected["mongodb"] = {((None, "service"), 27017), ((None, "gateway"), 27017)}
        expected["minio"] = {((None, "service"), 9000)}
    if monitoring:  # services: their metrics port; gateway: /metrics on its HTTP port
        for name in expected:
            if name not in ("mongodb", "minio"):
                expected[name].add((monitoring, 8000 if name == "gateway" else 9090))
    assert flows == expected
    # the peers' roles match the pods that carry them
    roles = {component(m): m["spec"]["template"]["metadata"]["labels"]["lm-saes.io/role"] for m in workloads(manifests)}
    assert {n for n, r in roles.items() if r == "service"} == set(SERVICE_PORTS) & set(roles)
    assert roles["gateway"] == "gateway"


def test_training_service_runs_jobs_on_kubernetes_with_least_privilege(chart):
    """gpu values enable kubernetesJobs: a Role for Jobs, and job pods the stores admit."""
    import json

    import kubernetes_validate

    from lm_saes.jobs import new_job
    from lm_saes.jobs.kubernetes import KubernetesSettings, job_manifests

    manifests = render(chart, "gpu")[0]
    (role,) = [m for m in manifests if m["kind"] == "Role"]
    assert {tuple(r["resources"]) for r in role["rules"]} == {("jobs",), ("jobs/status",), ("services",)}
    assert all("*" not in r["verbs"] for r in role["rules"])
    (binding,) = [m for m in manifests if m["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (training,) = [c for w, _, c in containers(manifests) if component(w) == "training"]
    env = {e["name"]: e for e in training["env"]}
    assert env["LM_SAES_EXECUTOR"]["value"] == "kubernetes"
    settings = KubernetesSettings.model_validate(json.loads(env["LM_SAES_KUBERNETES"]["value"]))
    assert settings.workers == 2 and settings.gpus_per_worker == 1 and settings.runtime_class_name == "nvidia"
    job_env = {e["name"]: e for e in settings.env}
    assert "valueFrom" in job_env["LM_SAES_DOCUMENTS"] and "valueFrom" in job_env["AWS_SECRET_ACCESS_KEY"]
    for manifest in job_manifests(new_job("training", {}, request_id="r"), settings):
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)
        if manifest["kind"] == "Job":
            labels = manifest["spec"]["template"]["metadata"]["labels"]
            for store in ("mongodb", "minio"):
                policy = next(m for m in manifests if m["kind"] == "NetworkPolicy" and m["metadata"]["name"].endswith(store))
                peers = [p["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"]
                         for p in rule["from"] if "podSelector" in p]
                assert any(peer.items() <= labels.items() for peer in peers), f"job pods cannot reach {store}"
