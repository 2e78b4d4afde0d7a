"""The Helm chart: lint, schema, Kubernetes API validity, and the properties the chart promises."""

from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import (
    CHART,
    RELEASE,
    REPO,
    VALUE_SETS,
    load_values,
    render,
    render_values,
)

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency (pip install -e '.[dev]')")

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is a dev dependency")
from kubernetes_validate import utils as kv_utils  # noqa: E402

KUBE_VERSIONS = ["1.29.0", "1.33.0"]
# Custom resources kubernetes-validate has no schema for; their validation is skipped on purpose.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
WORKLOADS = {"Deployment", "StatefulSet"}
GPU_SERVICES = {"activation", "training", "tracing"}
SERVICE_PORTS = {"activation": 50051, "training": 50052, "analysis": 50053, "tracing": 50054}
# The Secret with the services' token table (tokens.json) and the gateway's token (service-token).
AUTH_SECRET = dict.fromkeys(VALUE_SETS, "lm-saes-service-auth") | {"external": "lm-saes-grpc-tokens"}
GATEWAY_SCOPES = ["read", "compute", "submit", "admin", "service"]
HEALTHCHECK = ["python", "-m", "services.common.healthcheck"]


def workloads(manifests):
    return [m for m in manifests if m["kind"] in WORKLOADS]


def containers(manifests):
    for w in workloads(manifests):
        spec = w["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield w, spec, c


def component(obj) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def env_of(c) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def secret_sources(volume) -> list[tuple[str, list | None]]:
    """(Secret name, items) of every Secret a volume holds (a secret or a projected volume)."""
    if "secret" in volume:
        return [(volume["secret"]["secretName"], volume["secret"].get("items"))]
    return [
        (src["secret"]["name"], src["secret"].get("items"))
        for src in volume.get("projected", {}).get("sources", [])
        if "secret" in src
    ]


def secret_file(spec, c, path: str) -> tuple[str, str]:
    """(Secret, key) behind the file `path` in container c; fails unless it is on a read-only Secret mount."""
    for mount in c.get("volumeMounts", []):
        folder = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(folder):
            continue
        assert mount.get("readOnly") is True, f"{c['name']}: {path} is on a writable mount"
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        for secret, items in secret_sources(volume):
            for item in items or [{"key": path[len(folder) :], "path": path[len(folder) :]}]:
                if item["path"] == path[len(folder) :]:
                    return secret, item["key"]
    pytest.fail(f"{c['name']}: {path} is not a file mounted from a Secret")


def secrets_mounted(spec) -> set[str]:
    return {secret for v in spec.get("volumes", []) for secret, _ in secret_sources(v)}


def assert_valid(manifests, kube_version):
    """Every manifest validates strictly against kube_version's API schemas (CRDs: proven unknown)."""
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
    bad = [
        {"services": {"activation": {"gpu": "one"}}},
        {"unknownKey": 1},
        {"mongodb": {"enabled": False}},  # no document store at all
        {"minio": {"enabled": False}, "externalS3": {"endpoint": "s3.example.com"}},  # no bucket/secret
        # the services always require tokens: no switch to turn auth off, no tokens in env literals
        {"serviceAuth": {"enabled": False}},
        {"serviceAuth": {"disabled": True}},
        {"serviceAuth": {"extraTokens": {"short": {"name": "x", "scopes": ["read"]}}}},
        {"serviceAuth": {"extraTokens": {"x" * 20: {"name": "x", "scopes": ["root"]}}}},
        {"services": {"activation": {"env": {"LM_SAES_TOKENS_FILE": ""}}}},
        {"services": {"training": {"env": {"LM_SAES_TOKENS": '{"x": ["admin"]}'}}}},
        {"services": {"analysis": {"env": {"LM_SAES_TLS_CERT_FILE": ""}}}},
        {"gateway": {"env": {"LM_SAES_SERVICE_TOKEN": "x" * 40}}},
        {"tls": {"enabled": True}},
    ]  # TLS without a certificate Secret
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
    assert_valid(manifests, kube_version)


def test_kinds_rendered(chart):
    kinds = lambda name: {(m["kind"], m["metadata"]["name"]) for m in render(chart, name)[0]}  # noqa: E731
    default, gpu, external = kinds("default"), kinds("gpu"), kinds("external")
    for svc in ("activation", "training", "analysis", "gateway"):
        assert {
            ("Deployment", f"lm-saes-{svc}"),
            ("Service", f"lm-saes-{svc}"),
            ("PodDisruptionBudget", f"lm-saes-{svc}"),
            ("NetworkPolicy", f"lm-saes-{svc}"),
        } <= default
    assert ("HorizontalPodAutoscaler", "lm-saes-activation") in default
    assert {("StatefulSet", "lm-saes-mongodb"), ("StatefulSet", "lm-saes-minio")} <= default
    assert ("Deployment", "lm-saes-tracing") not in default and ("Deployment", "lm-saes-tracing") in gpu
    assert ("ServiceMonitor", "lm-saes") in gpu and ("Ingress", "lm-saes-gateway") in gpu
    assert ("Secret", "lm-saes-service-auth") in default and ("Secret", "lm-saes-service-auth") in gpu
    assert ("Secret", "lm-saes-service-auth") not in external  # serviceAuth.existingSecret instead
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


def test_service_probes_check_grpc_health_and_startup_allows_model_loading(manifests, value_set):
    for w, _, c in containers(manifests):
        name = component(w)
        if name in SERVICE_PORTS:
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if value_set == "tls":  # native gRPC probes cannot speak TLS: the image's command
                    assert c[probe]["exec"]["command"] == HEALTHCHECK and "grpc" not in c[probe], (name, probe)
                else:
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
    secrets_expected = {
        "default": ("lm-saes-mongodb", "lm-saes-minio"),
        "gpu": ("lm-saes-mongodb", "lm-saes-minio"),
        "tls": ("lm-saes-mongodb", "lm-saes-minio"),
        "external": ("lm-saes-mongodb-uri", "lm-saes-s3"),
    }[value_set]
    for w, _, c in containers(manifests):
        name = component(w)
        if name not in SERVICE_PORTS:
            continue
        env = {e["name"]: e for e in c["env"]}
        assert env["LM_SAES_HOST"]["value"] == "0.0.0.0"  # the services' own default is 127.0.0.1
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
                assert not SENSITIVE_NAME.search(key) and not CREDENTIAL_VALUE.search(str(value)), (
                    m["metadata"]["name"],
                    key,
                )
    for w, spec, c in containers(manifests):
        for e in c.get("env", []):
            where = f"{w['metadata']['name']}/{c['name']} env {e['name']}"
            if SENSITIVE_NAME.search(e["name"]) and e["name"].endswith("_FILE"):  # a path: the file is a Secret's
                assert secret_file(spec, c, e["value"]), where
            elif SENSITIVE_NAME.search(e["name"]):
                assert "value" not in e and "secretKeyRef" in e["valueFrom"], f"{where}: must come from a Secret"
            assert not CREDENTIAL_VALUE.search(str(e.get("value", ""))), f"{where}: credential in a literal"
    for m in manifests:  # the gateway's API tokens live in a Secret it references
        if m["kind"] == "Deployment" and component(m) == "gateway":
            env = {e["name"]: e for e in m["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert "secretKeyRef" in env["LM_SAES_API_TOKENS"]["valueFrom"]


def test_in_chart_store_secret_holds_the_uri(chart):
    import base64
    import json

    secret = next(
        m for m in render(chart, "default")[0] if m["kind"] == "Secret" and m["metadata"]["name"] == "lm-saes-mongodb"
    )
    uri = base64.b64decode(secret["data"]["uri"]).decode()
    assert re.fullmatch(
        r"mongodb://root:[A-Za-z0-9]{32}@lm-saes-mongodb\.lm-saes\.svc:27017/lm_saes\?authSource=admin", uri
    )
    tokens = next(m for m in render(chart, "default")[0] if m["metadata"]["name"] == "lm-saes-gateway-tokens")
    parsed = json.loads(base64.b64decode(tokens["data"]["tokens"]))  # LM_SAES_API_TOKENS: {token: scopes}
    assert len(parsed) == 1 and list(parsed.values()) == [["read", "compute", "submit"]]


# --- Service auth (bearer tokens) ----------------------------------------------------------------


def test_services_read_their_token_table_from_a_read_only_secret_file(manifests, value_set):
    seen = set()
    for w, spec, c in containers(manifests):
        if component(w) not in SERVICE_PORTS:
            continue
        seen.add(component(w))
        env = env_of(c)
        assert secret_file(spec, c, env["LM_SAES_TOKENS_FILE"]["value"]) == (AUTH_SECRET[value_set], "tokens.json")
        for volume in spec["volumes"]:  # the table only: the gateway's own token stays out of the pod
            for secret, items in secret_sources(volume):
                if secret == AUTH_SECRET[value_set]:
                    assert [item["key"] for item in items] == ["tokens.json"], component(w)
        refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})]
        assert AUTH_SECRET[value_set] not in refs
    assert seen >= {"activation", "training", "analysis"}


def test_only_the_gateway_gets_the_service_token_and_only_services_mount_the_table(manifests, value_set):
    auth = AUTH_SECRET[value_set]
    for w, spec, c in containers(manifests):
        name, env = component(w), env_of(c)
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        if name == "gateway":
            assert refs["LM_SAES_SERVICE_TOKEN"] == {"name": auth, "key": "service-token"}
            assert "value" not in env["LM_SAES_SERVICE_TOKEN"]
            assert auth not in secrets_mounted(spec), "the gateway must not mount tokens.json"
            assert "LM_SAES_TOKENS_FILE" not in env
        if name not in SERVICE_PORTS:  # gateway, mongodb, minio
            assert auth not in secrets_mounted(spec), name
            assert {n for n, ref in refs.items() if ref["name"] == auth} <= {"LM_SAES_SERVICE_TOKEN"}, name
            assert name == "gateway" or "LM_SAES_SERVICE_TOKEN" not in env, name
        assert not c.get("envFrom"), name


def test_chart_made_token_table_gives_the_gateway_token_its_scopes(chart):
    import base64
    import json

    from lm_saes.auth import TokenTable

    manifests = render(chart, "default")[0]
    (secret,) = [m for m in manifests if m["kind"] == "Secret" and "tokens.json" in m.get("data", {})]
    assert secret["metadata"]["name"] == "lm-saes-service-auth" and set(secret["data"]) == {
        "tokens.json",
        "service-token",
    }
    token = base64.b64decode(secret["data"]["service-token"]).decode()
    table = json.loads(base64.b64decode(secret["data"]["tokens.json"]))
    assert re.fullmatch(r"[A-Za-z0-9]{40}", token)
    assert table == {token: {"name": "gateway", "scopes": GATEWAY_SCOPES}}
    principal = TokenTable.parse(table).lookup(token)  # the services' own parser accepts it
    assert principal.name == "gateway" and principal.scopes == set(GATEWAY_SCOPES)
    for m in manifests:  # the tokens live in that Secret only
        if m is not secret:
            assert token not in json.dumps(m), f"{m['kind']}/{m['metadata']['name']} holds the gateway token"


def test_extra_tokens_join_the_chart_made_table(chart):
    import base64
    import json

    extra = {
        "alice-0123456789abcdef": {"name": "alice", "scopes": ["read", "submit"]},
        "ops-0123456789abcdefgh": {"name": "ops", "scopes": ["read", "admin"]},
    }
    manifests = render_values(chart, {"serviceAuth": {"extraTokens": extra}})[0]
    for version in KUBE_VERSIONS:
        assert_valid(manifests, version)
    secret = next(m for m in manifests if m["kind"] == "Secret" and m["metadata"]["name"] == "lm-saes-service-auth")
    table = json.loads(base64.b64decode(secret["data"]["tokens.json"]))
    token = base64.b64decode(secret["data"]["service-token"]).decode()
    assert table == extra | {token: {"name": "gateway", "scopes": GATEWAY_SCOPES}}


def test_existing_auth_secret_replaces_the_chart_secret(chart):
    manifests = render(chart, "external")[0]
    assert not [
        m for m in manifests if m["kind"] == "Secret" and {"tokens.json", "service-token"} & set(m.get("data", {}))
    ]
    assert "lm-saes-service-auth" not in str(manifests)  # every reference names the given Secret
    assert "secret lm-saes-grpc-tokens" in render(chart, "external")[1]  # NOTES: where to read the tokens


# --- TLS -------------------------------------------------------------------------------------------

TLS_FILES = {
    "LM_SAES_TLS_CERT_FILE": "tls.crt",
    "LM_SAES_TLS_KEY_FILE": "tls.key",
    "LM_SAES_TLS_CLIENT_CA_FILE": "ca.crt",
    # what the exec probe needs: the CA to trust and, under mTLS, a client pair (the service's own)
    "LM_SAES_TLS_CA_FILE": "ca.crt",
    "LM_SAES_TLS_CLIENT_CERT_FILE": "tls.crt",
    "LM_SAES_TLS_CLIENT_KEY_FILE": "tls.key",
}


def test_without_tls_nothing_tls_is_rendered(chart):
    for name in set(VALUE_SETS) - {"tls"}:
        for w, spec, c in containers(render(chart, name)[0]):
            assert not [e for e in c["env"] if e["name"].startswith("LM_SAES_TLS_")], (name, component(w))
            assert "tls" not in {v["name"] for v in spec["volumes"]}, (name, component(w))


def test_tls_services_serve_mtls_from_the_mounted_certificate(chart):
    manifests = render(chart, "tls")[0]
    seen = set()
    for w, spec, c in containers(manifests):
        name, env = component(w), env_of(c)
        if name in SERVICE_PORTS:
            seen.add(name)
            for variable, key in TLS_FILES.items():
                assert secret_file(spec, c, env[variable]["value"]) == ("lm-saes-grpc-tls", key), (name, variable)
            assert env["LM_SAES_TLS_SERVER_NAME"]["value"] == f"lm-saes-{name}"  # the name the probe checks
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert c[probe]["exec"]["command"] == HEALTHCHECK, (name, probe)
        elif name == "gateway":
            assert secret_file(spec, c, env["LM_SAES_TLS_CA_FILE"]["value"]) == ("lm-saes-grpc-tls", "ca.crt")
            client = "lm-saes-gateway-grpc-client"
            assert secret_file(spec, c, env["LM_SAES_TLS_CLIENT_CERT_FILE"]["value"]) == (client, "tls.crt")
            assert secret_file(spec, c, env["LM_SAES_TLS_CLIENT_KEY_FILE"]["value"]) == (client, "tls.key")
            served = [
                item["key"]
                for v in spec["volumes"]
                for secret, items in secret_sources(v)
                if secret == "lm-saes-grpc-tls"
                for item in items
            ]
            assert served == ["ca.crt"], "the gateway gets the services' CA, never their key"
            assert "LM_SAES_TLS_SERVER_NAME" not in env and "LM_SAES_TLS_CERT_FILE" not in env
        else:  # the stores
            assert not secrets_mounted(spec) & {"lm-saes-grpc-tls", "lm-saes-gateway-grpc-client"}, name
            assert not [e for e in c["env"] if e["name"].startswith("LM_SAES_TLS_")], name
    assert seen == set(SERVICE_PORTS) and "TLS" in render(chart, "tls")[1]


def test_tls_without_mutual_and_with_a_server_name(chart):
    values = {
        "tls": {"enabled": True, "secretName": "grpc-tls", "mutual": False, "serverName": "grpc.lm-saes.internal"}
    }
    manifests = render_values(chart, values)[0]
    for version in KUBE_VERSIONS:
        assert_valid(manifests, version)
    for w, spec, c in containers(manifests):
        name, env = component(w), env_of(c)
        if name in SERVICE_PORTS:
            assert secret_file(spec, c, env["LM_SAES_TLS_CERT_FILE"]["value"]) == ("grpc-tls", "tls.crt")
            assert secret_file(spec, c, env["LM_SAES_TLS_KEY_FILE"]["value"]) == ("grpc-tls", "tls.key")
            assert not {"LM_SAES_TLS_CLIENT_CA_FILE", "LM_SAES_TLS_CLIENT_CERT_FILE"} & set(env), name
            assert env["LM_SAES_TLS_SERVER_NAME"]["value"] == "grpc.lm-saes.internal"
            assert c["readinessProbe"]["exec"]["command"] == HEALTHCHECK
        elif name == "gateway":
            assert secret_file(spec, c, env["LM_SAES_TLS_CA_FILE"]["value"]) == ("grpc-tls", "ca.crt")
            assert env["LM_SAES_TLS_SERVER_NAME"]["value"] == "grpc.lm-saes.internal"
            assert not {"LM_SAES_TLS_CLIENT_CERT_FILE", "LM_SAES_TLS_CLIENT_KEY_FILE"} & set(env)
            assert secrets_mounted(spec) == {"grpc-tls"}


def make_pki(service_names: list[str]) -> dict[str, dict[str, bytes]]:
    """A CA, the services' certificate and the gateway's client certificate, as cert-manager Secrets."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def pem(key):
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def issue(subject, key, issuer, issuer_key, *, ca=False, names=(), usages=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = issue("lm-saes test CA", ca_key, "lm-saes test CA", ca_key, ca=True)
    server = issue(
        "lm-saes services",
        server_key,
        "lm-saes test CA",
        ca_key,
        names=service_names,
        usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    )
    client = issue("gateway", client_key, "lm-saes test CA", ca_key, usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    return {
        "lm-saes-grpc-tls": {"tls.crt": server, "tls.key": pem(server_key), "ca.crt": ca},
        "lm-saes-gateway-grpc-client": {"tls.crt": client, "tls.key": pem(client_key), "ca.crt": ca},
    }


def mount(spec, c, secrets: dict[str, dict[str, bytes]], root) -> dict[str, str]:
    """Write c's Secret volumes under `root` as the kubelet would; c's literal env with paths moved there."""
    for m in c["volumeMounts"]:
        volume = next(v for v in spec["volumes"] if v["name"] == m["name"])
        for secret, items in secret_sources(volume):
            for item in items or []:
                if secret in secrets:
                    target = root / m["mountPath"].lstrip("/") / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(secrets[secret][item["key"]])
    return {
        e["name"]: (str(root) + e["value"] if e["value"].startswith("/etc/") else e["value"])
        for e in c["env"]
        if "value" in e
    }


def test_tls_probe_command_and_gateway_credentials_work_with_the_rendered_settings(chart, tmp_path, monkeypatch):
    """The rendered mTLS settings, with real certificates where the Secrets are mounted: the service
    serves with them, its exec probe passes (and fails without the client pair), the gateway's
    client pair and CA are accepted under the name it dials."""
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    pytest.importorskip("cryptography", reason="cryptography makes the test certificates (moto depends on it)")
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from services.common.server import server_credentials
    from services.common.settings import ServiceSettings

    manifests = render(chart, "tls")[0]
    pods = {component(w): (spec, c) for w, spec, c in containers(manifests)}
    secrets = make_pki([f"lm-saes-{name}" for name in SERVICE_PORTS])
    service_env = mount(*pods["activation"], secrets, tmp_path / "activation")
    gateway_env = mount(*pods["gateway"], secrets, tmp_path / "gateway")

    for key in [k for k in os.environ if k.startswith("LM_SAES_")]:
        monkeypatch.delenv(key)
    for key, value in service_env.items():
        if key.startswith("LM_SAES_TLS_"):
            monkeypatch.setenv(key, value)
    credentials = server_credentials(ServiceSettings())  # what the service builds from that env
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:

        def probe(env):
            base = {k: v for k, v in os.environ.items() if not k.startswith("LM_SAES_")}
            return subprocess.run(
                [sys.executable, *HEALTHCHECK[1:]],
                env=base | env | {"LM_SAES_PORT": str(port)},
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )

        assert pods["activation"][1]["readinessProbe"]["exec"]["command"] == HEALTHCHECK
        ok = probe(service_env)
        assert ok.returncode == 0, ok.stderr
        bare = {
            k: v
            for k, v in service_env.items()
            if k not in ("LM_SAES_TLS_CLIENT_CERT_FILE", "LM_SAES_TLS_CLIENT_KEY_FILE")
        }
        assert probe(bare).returncode != 0, "mTLS: a probe without the client pair must be refused"

        read = lambda variable: open(gateway_env[variable], "rb").read()  # noqa: E731, SIM115
        channel_credentials = grpc.ssl_channel_credentials(
            read("LM_SAES_TLS_CA_FILE"), read("LM_SAES_TLS_CLIENT_KEY_FILE"), read("LM_SAES_TLS_CLIENT_CERT_FILE")
        )
        host = gateway_env["LM_SAES_ACTIVATION_ADDRESS"].rsplit(":", 1)[0]  # lm-saes-activation
        with grpc.secure_channel(
            f"127.0.0.1:{port}", channel_credentials, options=[("grpc.ssl_target_name_override", host)]
        ) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(0)


# --- NetworkPolicies -----------------------------------------------------------------------------


def peer_key(peer: dict) -> tuple:
    """A NetworkPolicy peer as (namespace labels, pod role/component) for comparison."""
    ns = peer.get("namespaceSelector")
    pods = (peer.get("podSelector") or {}).get("matchLabels", {})
    if pods:
        assert pods.get("app.kubernetes.io/instance") == RELEASE and ns is None, peer
    return (
        tuple(sorted((ns or {}).get("matchLabels", {}).items())) if ns is not None else None,
        pods.get("lm-saes.io/role"),
    )


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
    assert settings.procs_per_worker == 1  # the default procsPerWorker: 2 ranks
    values = load_values("gpu")
    values["kubernetesJobs"] = {**values["kubernetesJobs"], "procsPerWorker": 4, "gpusPerWorker": 4}
    (training,) = [c for w, _, c in containers(render_values(chart, values)[0]) if component(w) == "training"]
    env = {e["name"]: e for e in training["env"]}
    four = KubernetesSettings.model_validate(json.loads(env["LM_SAES_KUBERNETES"]["value"]))
    assert (four.workers, four.procs_per_worker) == (2, 4)  # 8 ranks: e.g. 4 replicas x 2 feature shards
    job_env = {e["name"]: e for e in settings.env}
    assert "valueFrom" in job_env["LM_SAES_DOCUMENTS"] and "valueFrom" in job_env["AWS_SECRET_ACCESS_KEY"]
    for manifest in job_manifests(new_job("training", {}, request_id="r"), settings):
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)
        if manifest["kind"] == "Job":
            labels = manifest["spec"]["template"]["metadata"]["labels"]
            for store in ("mongodb", "minio"):
                policy = next(
                    m for m in manifests if m["kind"] == "NetworkPolicy" and m["metadata"]["name"].endswith(store)
                )
                peers = [
                    p["podSelector"]["matchLabels"]
                    for rule in policy["spec"]["ingress"]
                    for p in rule["from"]
                    if "podSelector" in p
                ]
                assert any(peer.items() <= labels.items() for peer in peers), f"job pods cannot reach {store}"
