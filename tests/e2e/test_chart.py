"""The Helm chart and the rendered manifests, with the real helm and kubectl against the
real control plane.

The control plane has no kubelet, controller-manager or scheduler: Deployments never get
pods. So these tests prove what the API server can prove: the objects are valid
(`--dry-run=server`), install, upgrade and carry the permissions intended, and the pod
templates pass the `restricted` Pod Security admission; and the real `herald run` and
`herald callback-server`, authenticated only by TokenRequest tokens of the chart's
ServiceAccounts (what the kubelet projects into the pods), publish a post.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import runpy
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from herald.config import load
from tests.support.controlplane import REPO, ControlPlane, RetryingTransport
from tests.support.helm import CHART, Helm, documents, find, kubernetes_version, one

pytestmark = pytest.mark.e2e

FILES = CHART / "files"
CHART_CRD = FILES / "crds" / "scheduledposts.herald.dev.yaml"
RULES = FILES / "herald-alerts.rules.yaml"
DASHBOARD = FILES / "herald-dashboard.json"
MANIFESTS = REPO / "manifests"

# The permissions Herald needs, and nothing else. The operator: read posts, delete finished
# ones past their TTL, read/patch their status (every state change is a compare-and-swap
# status patch), post Events. kopf lists and watches CRDs (cluster-scoped, so always a
# ClusterRole). kopf runs standalone: no peering objects, no leases. The callback receiver
# (its own ServiceAccount only with callback.separateDeployment; a sidecar shares the
# operator's): get the post a callback names, patch its status, post Events.
OPERATOR_RULES = [
    {
        "apiGroups": ["herald.dev"],
        "resources": ["scheduledposts"],
        "verbs": ["get", "list", "watch", "delete"],
    },
    {
        "apiGroups": ["herald.dev"],
        "resources": ["scheduledposts/status"],
        "verbs": ["get", "patch"],
    },
    {
        "apiGroups": ["herald.dev"],
        "resources": ["publications"],
        "verbs": ["get", "create", "update", "list", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    # Accounts (issue #22): read when a post is claimed, watched for their Ready status.
    {
        "apiGroups": ["herald.dev"],
        "resources": ["socialaccounts"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": ["herald.dev"], "resources": ["socialaccounts/status"], "verbs": ["patch"]},
]
CRD_RULES = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {
        "apiGroups": ["herald.dev"],
        "resources": ["clustersocialaccounts"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["herald.dev"],
        "resources": ["clustersocialaccounts/status"],
        "verbs": ["patch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
]
QUOTA_RULES = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["list", "create", "deletecollection"],
    },
]
USER_ROLES = [
    ("ClusterRole", "herald-view"),
    ("ClusterRole", "herald-edit"),
    ("ClusterRole", "herald-admin"),
]
CALLBACK_RULES = [
    {"apiGroups": ["herald.dev"], "resources": ["scheduledposts"], "verbs": ["get"]},
    {"apiGroups": ["herald.dev"], "resources": ["scheduledposts/status"], "verbs": ["patch"]},
    {"apiGroups": ["herald.dev"], "resources": ["publications"], "verbs": ["get", "update"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
PUBLICATIONS_VIEW_RULES = [
    {"apiGroups": ["herald.dev"], "resources": ["publications"], "verbs": ["get", "list", "watch"]},
]

SECRETS_DIR = "/etc/herald/secrets"


def all_toggles(watch: list[str], grafana_namespace: str) -> dict[str, Any]:
    """Values that switch every optional part of the chart on."""
    return {
        "targets": {
            "default": {
                "url": "https://n8n.example.com/webhook/herald",
                "timeoutSeconds": 20,
                "authHeaderName": "X-Herald-Auth",
            },
            "backup": {"url": "http://n8n-backup.n8n.svc:5678/webhook/herald"},
        },
        "callbackUrl": "https://herald.example.com",
        "watchNamespaces": watch,
        "rbac": {"clusterWide": False},
        "secret": {"targetAuthValues": {"default": "header-value"}, "keepOnUninstall": True},
        "callbackSharedSecret": {"enabled": True},
        "config": {"concurrency": 4, "logFormat": "text", "logLevel": "DEBUG"},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": ["herald.example.com"],
            "tls": [{"secretName": "herald-tls", "hosts": ["herald.example.com"]}],
        },
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
            ],
            "apiServer": {"cidrs": ["10.0.0.1/32"]},
            "n8n": {
                "cidrs": ["203.0.113.0/24"],
                "peers": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "n8n"}}}
                ],
            },
        },
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        "grafana": {
            "dashboard": {
                "enabled": True,
                "namespace": grafana_namespace,
                "annotations": {"grafana_folder": "Herald"},
            }
        },
        "pdb": {"maxUnavailable": "50%"},
        "callback": {"separateDeployment": True, "replicaCount": 3},
        "admissionPolicy": {"enabled": True},
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"}],
        "podAnnotations": {"example.com/team": "social"},
        "priorityClassName": "system-cluster-critical",
    }


ALL_TOGGLES = all_toggles(["team-a", "team-b"], "grafana")


def extensions(monitoring_namespace: str) -> dict[str, Any]:
    """Values for every extension point (merged over all_toggles for "everything on")."""
    return {
        "crds": {"enabled": True},
        "commonLabels": {"example.com/cost-centre": "social"},
        "deploymentAnnotations": {"example.com/reload": "true"},
        "serviceAccount": {
            "name": "herald-runner",
            "callbackName": "herald-receiver",
            "annotations": {"iam.example.com/role": "herald"},
        },
        "extraArgs": ["--operator-flag"],
        "callback": {"extraArgs": ["--callback-flag"]},
        "extraVolumes": [{"name": "n8n-ca", "configMap": {"name": "n8n-ca"}}],
        "extraVolumeMounts": [{"name": "n8n-ca", "mountPath": "/etc/ssl/n8n", "readOnly": True}],
        "extraObjects": [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "{{ .Release.Name }}-extra-map"},
                "data": {"namespace": "{{ .Release.Namespace }}"},
            },
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            '  name: {{ include "herald.fullname" . }}-extra-string\n',
        ],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "herald"}},
            }
        ],
        "probes": {
            "startup": {"periodSeconds": 5, "failureThreshold": 24, "timeoutSeconds": 2},
            "liveness": {"initialDelaySeconds": 0, "periodSeconds": 20},
            "readiness": {"periodSeconds": 7, "successThreshold": 2},
        },
        "serviceMonitor": {
            "namespace": monitoring_namespace,
            "relabelings": [{"action": "replace", "targetLabel": "cluster", "replacement": "a"}],
            "metricRelabelings": [
                {"action": "drop", "sourceLabels": ["__name__"], "regex": "python_gc_.*"}
            ],
        },
        "prometheusRule": {
            "namespace": monitoring_namespace,
            "disabled": ["HeraldBacklogGrowing"],
            "overrides": {
                "HeraldCircuitOpen": {
                    "for": "10m",
                    "labels": {"severity": "critical", "team": "social"},
                    "annotations": {"runbook_url": "https://wiki.example.com/herald"},
                }
            },
        },
    }


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """base with over merged in, maps key by key (as helm merges values files)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


EVERYTHING = merged(ALL_TOGGLES, extensions("grafana"))


# --- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def helm(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(env=control_plane.env(), home=tmp_path_factory.mktemp("helm"))


MONITORING_CRDS = [
    ("servicemonitors", "ServiceMonitor"),
    ("prometheusrules", "PrometheusRule"),
]


@pytest.fixture(scope="module")
def monitoring_crds(control_plane: ControlPlane) -> None:
    """Stand-ins for the Prometheus Operator's CRDs: the kinds exist, any content goes.
    Created only when missing, so real ones installed by another test are left alone."""
    for plural, kind in MONITORING_CRDS:
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {
                    "kind": kind,
                    "listKind": f"{kind}List",
                    "plural": plural,
                    "singular": kind.lower(),
                },
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
        proc = control_plane.kubectl("create", "-f", "-", input=json.dumps(crd), check=False)
        assert proc.returncode == 0 or "AlreadyExists" in proc.stderr, proc.stderr
    for plural, _ in MONITORING_CRDS:
        control_plane.wait_established(f"{plural}.monitoring.coreos.com")


def create_namespace(cp: ControlPlane, name: str, **labels: str) -> str:
    cp.kubectl("create", "namespace", name)
    if labels:
        cp.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
    return name


def callback_deployment(docs: list[dict[str, Any]], fullname: str = "herald") -> dict[str, Any]:
    """The Deployment whose pods run the callback receiver (sidecar or separate)."""
    separate = find(docs, "Deployment", f"{fullname}-callback")
    return separate[0] if separate else one(docs, "Deployment", fullname)


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name
    ]
    return found


def volume(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    return found


def mounted_secret_files(deployment: dict[str, Any], container_name: str) -> set[str]:
    """Paths of the Secret keys a container sees under /etc/herald/secrets."""
    files = set()
    for mount in container(deployment, container_name)["volumeMounts"]:
        if mount["mountPath"] == SECRETS_DIR:
            assert mount["readOnly"] is True
            for item in volume(deployment, mount["name"])["secret"]["items"]:
                files.add(f"{SECRETS_DIR}/{item['path']}")
    return files


def config_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config_map = one([d for d in docs if d["metadata"]["name"].endswith("-config")], "ConfigMap")
    parsed: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return parsed


def rules_of(docs: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = one(docs, kind, name)["rules"]
    return rules


def can_i(
    cp: ControlPlane, user: str, verb: str, resource: str, namespace: str | None = None
) -> bool:
    """`kubectl auth can-i` as `user` (impersonated); resource may be "plural/subresource"."""
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    if subresource:
        args.append(f"--subresource={subresource}")
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    proc = cp.kubectl(*args, check=False)
    answer = proc.stdout.strip()
    assert answer in {"yes", "no"}, f"kubectl {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return answer == "yes"


def secret_data(cp: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    out = cp.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout
    data: dict[str, str] = json.loads(out)["data"]
    return data


def sa_token(cp: ControlPlane, namespace: str, sa: str) -> str:
    """A real token of ServiceAccount `sa` (TokenRequest), as the kubelet would mount."""
    return cp.kubectl("create", "token", sa, "-n", namespace, "--duration=10m").stdout.strip()


def post(name: str, namespace: str) -> str:
    return json.dumps(
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "ScheduledPost",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"publishAt": "2030-01-01T09:00:00Z", "content": {"text": "hello"}},
        }
    )


# --- the chart as files ------------------------------------------------------------------


def test_chart_crd_is_a_byte_identical_copy_of_crds() -> None:
    names = [
        "clustersocialaccounts.herald.dev.yaml",
        "publications.herald.dev.yaml",
        "scheduledposts.herald.dev.yaml",
        "socialaccounts.herald.dev.yaml",
    ]
    for name in names:
        top = REPO / "crds" / name
        assert (CHART_CRD.parent / name).read_bytes() == top.read_bytes(), (
            f"charts/herald/files/crds/ is stale: cp crds/{name} charts/herald/files/crds/"
        )
    assert sorted(p.name for p in CHART_CRD.parent.iterdir()) == names
    # A crds/ directory would be installed by Helm before the templated CRD, which then
    # could not be created (it exists, owned by no release).
    assert not (CHART / "crds").exists()


@pytest.mark.parametrize(
    "values", [None, ALL_TOGGLES, EVERYTHING], ids=["defaults", "all-toggles", "everything"]
)
def test_helm_lint_is_clean(helm: Helm, values: dict[str, Any] | None) -> None:
    proc = helm.run("lint", "--strict", str(CHART), *helm.values_args(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    for level in ("[ERROR]", "[WARNING]", "[INFO]"):
        assert level not in proc.stdout, proc.stdout


# --- what the chart renders ------------------------------------------------------------


def is_hook(doc: dict[str, Any]) -> bool:
    return "helm.sh/hook" in doc["metadata"].get("annotations", {})


def test_defaults_render_exactly_the_core_objects(helm: Helm) -> None:
    rendered = documents(helm.template())
    docs = [d for d in rendered if not is_hook(d)]
    # `helm test` objects, created only by `helm test`.
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered if is_hook(d)) == [
        ("Pod", "herald-test"),
        ("Role", "herald-test"),
        ("RoleBinding", "herald-test"),
        ("ServiceAccount", "herald-test"),
    ]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        [
            ("ConfigMap", "herald-config"),
            ("Secret", "herald-keys"),
            ("ServiceAccount", "herald-operator"),
            ("ClusterRole", "herald-operator"),
            ("ClusterRole", "herald-operator-crds"),
            ("ClusterRole", "herald-publications-view"),
            *USER_ROLES,
            ("ClusterRoleBinding", "herald-operator"),
            ("ClusterRoleBinding", "herald-operator-crds"),
            ("Role", "herald-operator-quota"),
            ("RoleBinding", "herald-operator-quota"),
            ("Service", "herald-callback"),
            ("Service", "herald-metrics"),
            ("Deployment", "herald"),
            ("PodDisruptionBudget", "herald"),
        ]
    )
    # Monitoring, ingress, network policy and the CRD are opt-in.
    optional = (
        "CustomResourceDefinition",
        "Ingress",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
        "Role",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    )
    for kind in optional:
        found = find(docs, kind)
        if kind == "Role":  # only the quota slots' Role, in the release's own namespace
            found = [r for r in found if r["metadata"]["name"] != "herald-operator-quota"]
        assert not found


def test_deployment_follows_the_contract(helm: Helm) -> None:
    docs = documents(helm.template())
    deployment = one(docs, "Deployment", "herald")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["serviceAccountName"] == "herald-operator"
    # Both containers use the pod's projected token; the ServiceAccount does not automount.
    assert pod["automountServiceAccountToken"] is True
    assert one(docs, "ServiceAccount", "herald-operator")["automountServiceAccountToken"] is False
    # Grace to finish an in-flight request (10 s timeout) and record it after SIGTERM.
    assert pod["terminationGracePeriodSeconds"] == 60
    # Service links would inject HERALD_CALLBACK_PORT=tcp://... (Service herald-callback),
    # which herald's settings would read as callback_port.
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert volume(deployment, "tmp")["emptyDir"] is not None

    operator, callback = container(deployment, "operator"), container(deployment, "callback")
    assert operator["args"] == ["run"]
    assert callback["args"] == ["callback-server"]
    for c in (operator, callback):
        assert c["image"] == "ghcr.io/herald-dev/herald:0.1.0"
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 65532
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert c["resources"]["requests"]
        assert c["resources"]["limits"]
        env = {e["name"]: e for e in c["env"]}
        assert env["HERALD_CONFIG_FILE"]["value"] == "/etc/herald/config.yaml"
        assert env["HERALD_IDENTITY"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/etc/herald/config.yaml"]["subPath"] == "config.yaml"
        assert mounts["/tmp"]["name"] == "tmp"
        assert mounts[SECRETS_DIR]["readOnly"] is True

    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ports == {"metrics": 9090, "health": 8081}
    assert [p["containerPort"] for p in callback["ports"]] == [8080]
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert callback["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "callback"}
    assert callback["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "callback"}

    # No long-lived token: no token Secret, no token volume, no mount over the projected one.
    sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert not [d for d in docs if d.get("type") == "kubernetes.io/service-account-token"]
    assert {v["name"] for v in pod["volumes"]} == {
        "config",
        "operator-secrets",
        "callback-secrets",
        "tmp",
    }
    for c in (operator, callback):
        assert sa_dir not in {m["mountPath"] for m in c["volumeMounts"]}

    # Least privilege for keys too: the sidecar never sees the signing key.
    assert mounted_secret_files(deployment, "operator") == {
        f"{SECRETS_DIR}/signing-key",
        f"{SECRETS_DIR}/callback-key",
    }
    assert mounted_secret_files(deployment, "callback") == {f"{SECRETS_DIR}/callback-key"}

    # Services: the callback port, and the operator's metrics, both on the operator's pods.
    selects = deployment["spec"]["selector"]["matchLabels"]
    assert selects["app.kubernetes.io/component"] == "operator"
    assert selects.items() <= spec["template"]["metadata"]["labels"].items()
    callback_svc = one(docs, "Service", "herald-callback")
    assert callback_svc["spec"]["selector"] == selects
    assert one(docs, "Service", "herald-metrics")["spec"]["selector"] == selects
    assert one(docs, "PodDisruptionBudget", "herald")["spec"]["selector"]["matchLabels"] == selects
    assert [(p["port"], p["targetPort"]) for p in callback_svc["spec"]["ports"]] == [
        (8080, "callback")
    ]
    metrics_svc = one(docs, "Service", "herald-metrics")
    assert [(p["port"], p["targetPort"]) for p in metrics_svc["spec"]["ports"]] == [
        (9090, "metrics")
    ]


@pytest.mark.parametrize("mode", ["defaults", "all-toggles"])
def test_config_file_is_valid_for_herald_and_matches_the_pod(
    helm: Helm, mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The rendered config.yaml loads with herald's own Settings, and every file and port
    it names is what the pod mounts and exposes."""
    values = ALL_TOGGLES if mode == "all-toggles" else None
    docs = documents(helm.template("herald", "herald", values))
    deployment = one(docs, "Deployment", "herald")
    receiver = callback_deployment(docs)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config_of(docs)))
    for name in [n for n in os.environ if n.startswith("HERALD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HERALD_CONFIG_FILE", str(config_file))
    settings = load()

    operator_files = mounted_secret_files(deployment, "operator")
    callback_files = mounted_secret_files(receiver, "callback")
    assert str(settings.signing_key_file) in operator_files
    assert str(settings.signing_key_file) not in callback_files
    assert str(settings.callback_key_file) in operator_files & callback_files
    for target in settings.targets.values():
        if target.auth_header_name:
            assert str(target.auth_header_value_file) in operator_files
    ports = {
        p["name"]: p["containerPort"]
        for d, c in ((deployment, "operator"), (receiver, "callback"))
        for p in container(d, c)["ports"]
    }
    assert ports == {
        "metrics": settings.metrics_port,
        "health": settings.health_port,
        "callback": settings.callback_port,
    }
    assert settings.callback_host == "0.0.0.0"

    if mode == "defaults":
        assert settings.namespaces == []
        assert str(settings.targets["default"].url).startswith("http://n8n.n8n.svc")
        assert settings.callback_endpoint() == "http://herald-callback.herald.svc:8080/v1/callbacks"
        assert settings.callback_shared_secret_file is None
        assert (settings.concurrency, settings.max_attempts, settings.log_format) == (16, 5, "json")
    else:
        assert settings.namespaces == ["team-a", "team-b"]
        assert set(settings.targets) == {"default", "backup"}
        assert settings.targets["default"].auth_header_name == "X-Herald-Auth"
        assert settings.targets["default"].timeout_seconds == 20
        assert settings.callback_endpoint() == "https://herald.example.com/v1/callbacks"
        assert str(settings.callback_shared_secret_file) in callback_files
        assert (settings.concurrency, settings.log_format, settings.log_level) == (
            4,
            "text",
            "DEBUG",
        )


def test_rbac_rules_are_exactly_the_intended_ones(helm: Helm) -> None:
    cluster = documents(helm.template())
    assert rules_of(cluster, "ClusterRole", "herald-operator") == OPERATOR_RULES
    assert rules_of(cluster, "ClusterRole", "herald-operator-crds") == CRD_RULES
    assert rules_of(cluster, "Role", "herald-operator-quota") == QUOTA_RULES
    # The sidecar shares the operator's identity: no callback ServiceAccount or roles.
    assert not [
        d for d in cluster if d["metadata"]["name"] == "herald-callback" and d["kind"] != "Service"
    ]
    separate = documents(
        helm.template("herald", "herald", {"callback": {"separateDeployment": True}})
    )
    assert rules_of(separate, "ClusterRole", "herald-callback") == CALLBACK_RULES
    binding = one(separate, "ClusterRoleBinding", "herald-callback")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "herald-callback", "namespace": "herald"}
    ]

    namespaced = documents(helm.template("herald", "herald", ALL_TOGGLES))
    assert {r["metadata"]["name"] for r in find(namespaced, "ClusterRole")} == {
        "herald-operator-crds",
        "herald-publications-view",
        *(name for _, name in USER_ROLES),
    }
    # People read the ledger (aggregated into view/edit/admin); Herald alone writes it.
    view = one(namespaced, "ClusterRole", "herald-publications-view")
    assert view["rules"] == PUBLICATIONS_VIEW_RULES
    assert {k: v for k, v in view["metadata"]["labels"].items() if k.startswith("rbac.")} == {
        f"rbac.authorization.k8s.io/aggregate-to-{r}": "true" for r in ("view", "edit", "admin")
    }
    assert rules_of(namespaced, "ClusterRole", "herald-operator-crds") == [
        *CRD_RULES,
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    ]
    for ns in ("team-a", "team-b"):
        roles = {
            r["metadata"]["name"]: r
            for r in find(namespaced, "Role")
            if r["metadata"]["namespace"] == ns
        }
        assert roles["herald-operator"]["rules"] == OPERATOR_RULES
        assert roles["herald-callback"]["rules"] == CALLBACK_RULES
        bindings = [b for b in find(namespaced, "RoleBinding") if b["metadata"]["namespace"] == ns]
        assert sorted(
            (b["roleRef"]["name"], s["name"], s["namespace"])
            for b in bindings
            for s in b["subjects"]
        ) == [
            ("herald-callback", "herald-callback", "herald"),
            ("herald-operator", "herald-operator", "herald"),
        ]


def test_separate_callback_deployment_has_its_own_identity_pods_and_budget(helm: Helm) -> None:
    docs = documents(helm.template("herald", "herald", ALL_TOGGLES))
    operator, receiver = (
        one(docs, "Deployment", "herald"),
        one(docs, "Deployment", "herald-callback"),
    )
    assert [c["name"] for c in operator["spec"]["template"]["spec"]["containers"]] == ["operator"]
    assert {v["name"] for v in operator["spec"]["template"]["spec"]["volumes"]} == {
        "config",
        "operator-secrets",
        "tmp",
    }
    pod = receiver["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["callback"]
    assert receiver["spec"]["replicas"] == 3
    assert pod["serviceAccountName"] == "herald-callback"
    assert pod["automountServiceAccountToken"] is True
    assert pod["enableServiceLinks"] is False
    assert container(receiver, "callback")["args"] == ["callback-server"]
    assert mounted_secret_files(receiver, "callback") == {
        f"{SECRETS_DIR}/callback-key",
        f"{SECRETS_DIR}/callback-shared-secret",
    }
    assert one(docs, "ServiceAccount", "herald-callback")["automountServiceAccountToken"] is False

    # Disjoint pods: each Deployment, Service and budget selects only its own component.
    op_sel = operator["spec"]["selector"]["matchLabels"]
    cb_sel = receiver["spec"]["selector"]["matchLabels"]
    assert op_sel["app.kubernetes.io/component"] == "operator"
    assert cb_sel["app.kubernetes.io/component"] == "callback"
    assert cb_sel.items() <= receiver["spec"]["template"]["metadata"]["labels"].items()
    assert not op_sel.items() <= receiver["spec"]["template"]["metadata"]["labels"].items()
    assert not cb_sel.items() <= operator["spec"]["template"]["metadata"]["labels"].items()
    assert one(docs, "Service", "herald-callback")["spec"]["selector"] == cb_sel
    assert one(docs, "Service", "herald-metrics")["spec"]["selector"] == op_sel
    budgets = {p["metadata"]["name"]: p["spec"] for p in find(docs, "PodDisruptionBudget")}
    assert budgets == {
        "herald": {"maxUnavailable": "50%", "selector": {"matchLabels": op_sel}},
        "herald-callback": {"maxUnavailable": "50%", "selector": {"matchLabels": cb_sel}},
    }
    # The Ingress and ServiceMonitor reach the receiver through the same Service.
    ingress = one(docs, "Ingress", "herald-callback")
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == (
        "herald-callback"
    )


def test_optional_settings_are_rendered_only_when_set(
    helm: Helm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """TTLs and per-target concurrency are left out of config.yaml unless set, so a Herald
    that does not know them yet (it refuses unknown settings) keeps starting."""
    defaults = config_of(documents(helm.template()))
    assert "ttl_seconds_after_published" not in defaults
    assert "ttl_seconds_after_failed" not in defaults
    assert "concurrency" not in defaults["targets"]["default"]

    values = {
        "config": {"ttlSecondsAfterPublished": 86400, "ttlSecondsAfterFailed": 0},
        "targets": {
            "default": {"url": "https://n8n.example.com/webhook/a", "concurrency": 4},
            "other": {"url": "https://n8n.example.com/webhook/b"},
        },
    }
    config = config_of(documents(helm.template("herald", "herald", values)))
    assert config["ttl_seconds_after_published"] == 86400
    assert config["ttl_seconds_after_failed"] == 0
    assert config["targets"]["default"]["concurrency"] == 4
    assert "concurrency" not in config["targets"]["other"]

    # Once herald's settings know them, the rendered file must load with the same values.
    from herald.config import Settings

    if "ttl_seconds_after_published" in Settings.model_fields:
        config_file = tmp_path / "config.yaml"
        config_file.write_text(yaml.safe_dump(config))
        for name in [n for n in os.environ if n.startswith("HERALD_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("HERALD_CONFIG_FILE", str(config_file))
        loaded = load().model_dump()
        assert loaded["ttl_seconds_after_published"] == 86400
        assert loaded["ttl_seconds_after_failed"] == 0
        assert loaded["targets"]["default"]["concurrency"] == 4


def test_all_toggles_render_the_optional_objects(helm: Helm) -> None:
    docs = documents(helm.template("herald", "herald", ALL_TOGGLES))

    ingress = one(docs, "Ingress", "herald-callback")
    (rule,) = ingress["spec"]["rules"]
    # Only the callback endpoint is exposed, not /metrics or /openapi.json.
    assert rule["http"]["paths"] == [
        {
            "path": "/v1/callbacks",
            "pathType": "Exact",
            "backend": {"service": {"name": "herald-callback", "port": {"name": "callback"}}},
        }
    ]

    policy = one(docs, "NetworkPolicy", "herald")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert [[p["port"] for p in r["ports"]] for r in policy["ingress"]] == [
        ["callback"],
        ["metrics"],
    ]
    egress_ports = [sorted(p["port"] for p in r["ports"]) for r in policy["egress"]]
    assert egress_ports == [[53, 53], [443, 6443], [443, 5678]]
    assert policy["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert {"ipBlock": {"cidr": "203.0.113.0/24"}} in policy["egress"][2]["to"]

    monitor = one(docs, "ServiceMonitor", "herald")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [
        ("metrics", "/metrics"),
        ("callback", "/metrics"),
    ]
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        s for s in find(docs, "Service") if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert sorted(s["metadata"]["name"] for s in scraped) == ["herald-callback", "herald-metrics"]

    rule_obj = one(docs, "PrometheusRule", "herald")
    assert rule_obj["spec"] == yaml.safe_load(RULES.read_text())
    assert rule_obj["spec"]["groups"]

    dashboard = one(docs, "ConfigMap", "herald-dashboard")
    assert dashboard["metadata"]["namespace"] == "grafana"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Herald"}
    assert json.loads(dashboard["data"]["herald-dashboard.json"]) == json.loads(
        DASHBOARD.read_text()
    )

    keys = one(docs, "Secret", "herald-keys")
    assert keys["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert set(keys["data"]) == {
        "signing-key",
        "callback-key",
        "callback-shared-secret",
        "target-default-auth",
    }
    assert base64.b64decode(keys["data"]["target-default-auth"]) == b"header-value"
    assert one(docs, "PodDisruptionBudget", "herald")["spec"]["maxUnavailable"] == "50%"


def test_dashboard_label_is_configurable(helm: Helm) -> None:
    values = {"grafana": {"dashboard": {"enabled": True, "labelKey": "dash", "labelValue": "on"}}}
    dashboard = one(
        documents(helm.template("herald", "herald", values)), "ConfigMap", "herald-dashboard"
    )
    assert dashboard["metadata"]["labels"]["dash"] == "on"
    assert "grafana_dashboard" not in dashboard["metadata"]["labels"]
    assert dashboard["metadata"]["namespace"] == "herald"


# --- against the API server -------------------------------------------------------------


@pytest.mark.usefixtures("monitoring_crds")
@pytest.mark.parametrize("mode", ["defaults", "all-toggles"])
def test_every_rendered_object_passes_server_side_dry_run(
    helm: Helm, control_plane: ControlPlane, namespace: str, mode: str, tmp_path: Path
) -> None:
    values = None
    if mode == "all-toggles":
        watch = [create_namespace(control_plane, f"{namespace}-{s}") for s in ("a", "b")]
        elsewhere = create_namespace(control_plane, f"{namespace}-grafana")
        # Every toggle and extension point, the CRD and the `helm test` objects included.
        values = merged(all_toggles(watch, elsewhere), extensions(elsewhere))
    rendered = helm.template(f"dry-{namespace}", namespace, values, "--include-crds")
    path = tmp_path / "rendered.yaml"
    path.write_text(rendered)
    proc = control_plane.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    assert proc.returncode == 0, proc.stderr
    docs = documents(rendered)
    applied = [line for line in proc.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(docs), proc.stdout
    if mode == "all-toggles":
        kinds = (
            "ingress",
            "networkpolicy",
            "servicemonitor",
            "prometheusrule",
            "role.",
            "customresourcedefinition",
            "pod/",
            "configmap/dry-",
        )
        for kind in kinds:
            assert any(line.startswith(kind) for line in applied), (kind, proc.stdout)


def test_pod_template_passes_restricted_pod_security(
    helm: Helm, control_plane: ControlPlane, namespace: str
) -> None:
    """PodSecurity admission checks pods, not Deployments: create the Deployment's pod
    (dry run) in a namespace that enforces `restricted`."""
    control_plane.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    separate = {"callback": {"separateDeployment": True}}
    deployments = [
        *find(documents(helm.template("herald", namespace)), "Deployment"),
        *find(documents(helm.template("herald", namespace, separate)), "Deployment"),
    ]
    assert len(deployments) == 3
    for deployment in deployments:
        template = deployment["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "herald-pod", "namespace": namespace, **template["metadata"]},
            "spec": template["spec"],
        }
        proc = control_plane.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert "PodSecurity" not in proc.stderr
    # The `helm test` Pod runs restricted too.
    hook = one(documents(helm.template("herald", namespace)), "Pod", "herald-test")
    proc = control_plane.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(hook), check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "PodSecurity" not in proc.stderr
    pod["spec"] = deployments[0]["spec"]["template"]["spec"]

    # The namespace really enforces it: a container that may escalate is refused.
    pod["spec"]["containers"][1]["securityContext"]["allowPrivilegeEscalation"] = True
    proc = control_plane.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr
    assert "allowPrivilegeEscalation" in proc.stderr


def test_helm_install_and_upgrade_keep_the_generated_keys(
    helm: Helm, control_plane: ControlPlane, namespace: str
) -> None:
    release = f"r-{namespace}"
    fullname = f"{release}-herald"
    install = helm.run("install", release, str(CHART), "--namespace", namespace)
    assert f"{fullname}-callback.{namespace}.svc:8080/v1/callbacks" in install.stdout  # NOTES
    # NOTES points only at what a chart user has: no files of Herald's repository.
    assert "manifests/" not in install.stdout
    assert "crds/" not in install.stdout
    (apply_crd,) = [
        line.strip()
        for line in install.stdout.splitlines()
        if "--show-only templates/crds.yaml | kubectl apply -f -" in line
    ]
    # As a user would run it (dry run: the cluster's CRD is shared by the other tests).
    command = apply_crd.replace("<chart>", str(CHART)).replace(
        "helm template", f"helm template --kube-version {kubernetes_version()}"
    )
    applied = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{command} --dry-run=server"],
        env=helm.env_for_shell(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    assert "customresourcedefinition.apiextensions.k8s.io/scheduledposts.herald.dev" in (
        applied.stdout
    )
    assert f"helm test {release} -n {namespace}" in install.stdout
    read_key = (
        f"kubectl -n {namespace} get secret {fullname}-keys "
        "-o jsonpath='{.data.signing-key}' | base64 -d"
    )
    assert read_key in install.stdout
    assert f'Callback receiver: sidecar container "callback" of Deployment {fullname}' in (
        install.stdout
    )

    # Everything a pod would need exists (no pod ever runs here: there is no kubelet).
    control_plane.kubectl(
        "get",
        "-n",
        namespace,
        f"deployment/{fullname}",
        f"serviceaccount/{fullname}-operator",
        f"service/{fullname}-callback",
        f"service/{fullname}-metrics",
        f"configmap/{fullname}-config",
        f"secret/{fullname}-keys",
        f"poddisruptionbudget/{fullname}",
    )
    control_plane.kubectl(
        "get",
        f"clusterrole/{fullname}-operator",
        f"clusterrole/{fullname}-operator-crds",
        f"clusterrolebinding/{fullname}-operator",
        f"clusterrolebinding/{fullname}-operator-crds",
    )
    first = secret_data(control_plane, namespace, f"{fullname}-keys")
    assert set(first) == {"signing-key", "callback-key"}
    # The command NOTES gives prints the signing key itself.
    printed = subprocess.run(
        ["bash", "-o", "pipefail", "-c", read_key],
        env=control_plane.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert printed == base64.b64decode(first["signing-key"]).decode()
    # The signing key in Standard Webhooks form: "whsec_" + base64 of 32 random bytes.
    signing = base64.b64decode(first["signing-key"]).decode()
    assert signing.startswith("whsec_")
    assert len(base64.b64decode(signing.removeprefix("whsec_"), validate=True)) == 32
    assert len(base64.b64decode(first["callback-key"])) == 64

    def annotations() -> dict[str, str]:
        out = control_plane.kubectl("get", "deployment", fullname, "-n", namespace, "-o", "json")
        meta: dict[str, str] = json.loads(out.stdout)["spec"]["template"]["metadata"]
        return dict(meta["annotations"])

    before = annotations()
    # A config change, and a new target with an n8n auth header (a new generated key).
    helm.run(
        "upgrade",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "config.concurrency=8",
        "--set",
        "targets.backup.url=https://n8n.example.com/webhook/backup",
        "--set",
        "targets.backup.authHeaderName=X-Herald-Auth",
    )
    second = secret_data(control_plane, namespace, f"{fullname}-keys")
    assert second["signing-key"] == first["signing-key"]
    assert second["callback-key"] == first["callback-key"]
    assert set(second) == {"signing-key", "callback-key", "target-backup-auth"}
    after = annotations()
    assert after["checksum/config"] != before["checksum/config"]  # pods roll on config change
    config = control_plane.kubectl(
        "get",
        "configmap",
        f"{fullname}-config",
        "-n",
        namespace,
        "-o",
        "jsonpath={.data.config\\.yaml}",
    ).stdout
    assert yaml.safe_load(config)["concurrency"] == 8

    # Upgrading again with the same values changes nothing secret, and rolls nothing.
    helm.run(
        "upgrade",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--reuse-values",
    )
    assert secret_data(control_plane, namespace, f"{fullname}-keys") == second
    assert annotations() == after

    # `helm template` cannot look the Secret up: it renders new keys every time (as
    # documented), which is why manifests/ uses an existing Secret instead.
    renders = [
        one(documents(helm.template(release, namespace)), "Secret", f"{fullname}-keys")
        for _ in range(2)
    ]
    assert renders[0]["data"]["signing-key"] != renders[1]["data"]["signing-key"]
    assert renders[0]["data"]["signing-key"] != first["signing-key"]


def test_existing_secret_is_used_instead_of_a_generated_one(helm: Helm) -> None:
    docs = documents(helm.template("herald", "herald", {"secret": {"existingSecret": "mine"}}))
    assert find(docs, "Secret") == []
    deployment = one(docs, "Deployment", "herald")
    assert {
        v["secret"]["secretName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    } == {"mine"}
    assert "checksum/secret" not in deployment["spec"]["template"]["metadata"]["annotations"]


OPERATOR_CAN = [
    ("get", "scheduledposts.herald.dev"),
    ("list", "scheduledposts.herald.dev"),
    ("watch", "scheduledposts.herald.dev"),
    ("delete", "scheduledposts.herald.dev"),
    ("get", "scheduledposts.herald.dev/status"),
    ("patch", "scheduledposts.herald.dev/status"),
    ("create", "events"),
    ("patch", "events"),
]
OPERATOR_CANNOT = [
    ("create", "scheduledposts.herald.dev"),
    ("update", "scheduledposts.herald.dev"),
    ("patch", "scheduledposts.herald.dev"),
    ("deletecollection", "scheduledposts.herald.dev"),
    ("update", "scheduledposts.herald.dev/status"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("get", "configmaps"),
    ("list", "pods"),
    ("get", "leases.coordination.k8s.io"),
    ("update", "leases.coordination.k8s.io"),
    ("list", "kopfpeerings.kopf.dev"),
    ("list", "events"),
]
CALLBACK_CAN = [
    ("get", "scheduledposts.herald.dev"),
    ("patch", "scheduledposts.herald.dev/status"),
    ("create", "events"),
]
CALLBACK_CANNOT = [
    ("list", "scheduledposts.herald.dev"),
    ("watch", "scheduledposts.herald.dev"),
    ("patch", "scheduledposts.herald.dev"),
    ("delete", "scheduledposts.herald.dev"),
    ("get", "scheduledposts.herald.dev/status"),
    ("get", "secrets"),
    ("delete", "events"),
]


def test_rbac_cluster_wide_grants_only_what_herald_needs(
    helm: Helm, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """Cluster-wide RBAC, with the callback receiver in its own Deployment (its own
    ServiceAccount; the sidecar mode shares the operator's, tested namespaced below)."""
    release = f"rbac-{namespace}"
    fullname = f"{release}-herald"
    install = helm.run(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "callback.separateDeployment=true",
    )
    assert (
        f"Callback receiver: Deployment {fullname}-callback (2 replicas, ServiceAccount "
        f"{fullname}-callback)"
    ) in install.stdout
    operator = f"system:serviceaccount:{namespace}:{fullname}-operator"
    callback = f"system:serviceaccount:{namespace}:{fullname}-callback"
    elsewhere = create_namespace(control_plane, f"{namespace}-other")

    denied = [
        (verb, res)
        for verb, res in OPERATOR_CAN
        if not can_i(control_plane, operator, verb, res, elsewhere)
    ]
    assert denied == [], "cluster-wide: the operator works in every namespace"
    granted = [
        (v, r) for v, r in OPERATOR_CANNOT if can_i(control_plane, operator, v, r, namespace)
    ]
    assert granted == []
    # Quota slots: Leases in its own namespace only (kopf's peering is not used).
    assert can_i(control_plane, operator, "create", "leases.coordination.k8s.io", namespace)
    assert not can_i(control_plane, operator, "create", "leases.coordination.k8s.io", elsewhere)
    assert can_i(control_plane, operator, "list", "customresourcedefinitions.apiextensions.k8s.io")
    assert can_i(control_plane, operator, "watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can_i(
        control_plane, operator, "get", "customresourcedefinitions.apiextensions.k8s.io"
    )
    assert not can_i(control_plane, operator, "list", "namespaces")

    assert all(can_i(control_plane, callback, v, r, elsewhere) for v, r in CALLBACK_CAN)
    granted = [
        (v, r) for v, r in CALLBACK_CANNOT if can_i(control_plane, callback, v, r, namespace)
    ]
    assert granted == []
    assert not can_i(
        control_plane, callback, "list", "customresourcedefinitions.apiextensions.k8s.io"
    )

    # The same with real ServiceAccount tokens (TokenRequest), doing real requests: kubectl
    # for reads and refusals, and the status write as herald does it (a JSON patch whose
    # "test" op makes it a compare-and-swap, with no GET of the status subresource first).
    control_plane.kubectl("create", "-f", "-", input=post("p1", elsewhere))
    operator_token = sa_token(control_plane, namespace, f"{fullname}-operator")
    callback_token = sa_token(control_plane, namespace, f"{fullname}-callback")
    as_operator = control_plane.write_kubeconfig(
        tmp_path / "operator.kubeconfig", "operator", token=operator_token
    )
    as_callback = control_plane.write_kubeconfig(
        tmp_path / "callback.kubeconfig", "callback", token=callback_token
    )

    def kubectl_as(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return control_plane.kubectl(*args, "-n", elsewhere, kubeconfig=kubeconfig, check=False)

    def cas_status(token: str, before: Any, status: dict[str, Any]) -> httpx.Response:
        ops = [
            {"op": "test", "path": "/status", "value": before},
            {"op": "add", "path": "/status", "value": status},
        ]
        tls = ssl.create_default_context(cafile=str(control_plane.ca_file))
        with httpx.Client(verify=tls, timeout=10) as client:
            return client.patch(
                f"{control_plane.server}/apis/herald.dev/v1alpha1/namespaces/{elsewhere}"
                "/scheduledposts/p1/status",
                content=json.dumps(ops),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json-patch+json",
                },
            )

    listed = kubectl_as(as_operator, "get", "scheduledposts", "-o", "name")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "scheduledpost.herald.dev/p1"
    read = kubectl_as(as_operator, "get", "scheduledpost", "p1", "-o", "json")
    assert read.returncode == 0, read.stderr
    pending = json.loads(read.stdout)["status"]  # the CRD's default: nothing written yet
    assert pending["phase"] == "Pending"
    patched = cas_status(operator_token, pending, {"phase": "Scheduled", "attempt": 0})
    assert patched.status_code == 200, patched.text
    refusals = [
        ("get", "secrets"),
        ("label", "scheduledpost", "p1", "x=y"),
        ("create", "configmap", "x", "--from-literal=a=b"),
    ]
    for args in refusals:
        refused = kubectl_as(as_operator, *args)
        assert refused.returncode != 0
        assert "forbidden" in refused.stderr.lower(), refused.stderr
        assert f"system:serviceaccount:{namespace}:{fullname}-operator" in refused.stderr

    got = kubectl_as(as_callback, "get", "scheduledpost", "p1", "-o", "json")
    assert got.returncode == 0, got.stderr
    before = json.loads(got.stdout)["status"]
    assert before["phase"] == "Scheduled"
    patched = cas_status(callback_token, before, {**before, "externalId": "urn:li:share:1"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"]["externalId"] == "urn:li:share:1"
    refusals = [("get", "scheduledposts"), ("get", "secrets"), ("delete", "scheduledpost", "p1")]
    for args in refusals:
        refused = kubectl_as(as_callback, *args)
        assert refused.returncode != 0
        assert "forbidden" in refused.stderr.lower(), refused.stderr
        assert f"system:serviceaccount:{namespace}:{fullname}-callback" in refused.stderr

    # Finished posts past their TTL: the operator may delete a post.
    deleted = kubectl_as(as_operator, "delete", "scheduledpost", "p1")
    assert deleted.returncode == 0, deleted.stderr


def test_rbac_namespaced_mode_is_limited_to_watch_namespaces(
    helm: Helm, control_plane: ControlPlane, namespace: str
) -> None:
    watched = [create_namespace(control_plane, f"{namespace}-w{i}") for i in (1, 2)]
    unwatched = create_namespace(control_plane, f"{namespace}-u")
    release = f"ns-{namespace}"
    fullname = f"{release}-herald"
    helm.run(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "rbac.clusterWide=false",
        "--set",
        f"watchNamespaces={{{watched[0]},{watched[1]}}}",
    )
    for ns in watched:
        control_plane.kubectl(
            "get",
            "-n",
            ns,
            f"role/{fullname}-operator",
            f"rolebinding/{fullname}-operator",
        )
        # Sidecar mode: the callback receiver shares the operator's identity.
        absent = control_plane.kubectl("get", "-n", ns, "role", f"{fullname}-callback", check=False)
        assert "NotFound" in absent.stderr
    absent = control_plane.kubectl("get", "clusterrole", f"{fullname}-operator", check=False)
    assert "NotFound" in absent.stderr
    absent = control_plane.kubectl(
        "get", "serviceaccount", f"{fullname}-callback", "-n", namespace, check=False
    )
    assert "NotFound" in absent.stderr
    config = control_plane.kubectl(
        "get",
        "configmap",
        f"{fullname}-config",
        "-n",
        namespace,
        "-o",
        "jsonpath={.data.config\\.yaml}",
    ).stdout
    assert yaml.safe_load(config)["namespaces"] == watched

    operator = f"system:serviceaccount:{namespace}:{fullname}-operator"
    callback = f"system:serviceaccount:{namespace}:{fullname}-callback"
    for ns in watched:
        assert all(can_i(control_plane, operator, v, r, ns) for v, r in OPERATOR_CAN)
        # What the sidecar does is a subset of what the operator may do.
        assert all(can_i(control_plane, operator, v, r, ns) for v, r in CALLBACK_CAN)
        assert not any(can_i(control_plane, operator, v, r, ns) for v, r in OPERATOR_CANNOT)
        assert not any(can_i(control_plane, callback, v, r, ns) for v, r in CALLBACK_CAN)
    for ns in (unwatched, namespace):
        assert not any(can_i(control_plane, operator, v, r, ns) for v, r in OPERATOR_CAN)
    assert not can_i(control_plane, operator, "list", "scheduledposts.herald.dev")  # all ns
    # CRDs are cluster-scoped: that rule stays a ClusterRole in this mode too.
    assert can_i(control_plane, operator, "watch", "customresourcedefinitions.apiextensions.k8s.io")


# --- values.schema.json ------------------------------------------------------------------

SCHEMA_ERROR = "values don't meet the specifications of the schema"
BAD_VALUES = [
    (
        "wrong-type",
        ["config.concurrency=lots"],
        [SCHEMA_ERROR, "/config/concurrency", "got string, want integer"],
    ),
    (
        "unknown-key",
        ["config.concurency=4"],
        [SCHEMA_ERROR, "/config", "additional properties 'concurency' not allowed"],
    ),
    (
        "unknown-top-level-key",
        ["replicas=3"],
        [SCHEMA_ERROR, "additional properties 'replicas' not allowed"],
    ),
    (
        "negative-concurrency",
        ["config.concurrency=-1"],
        [SCHEMA_ERROR, "/config/concurrency", "minimum: got -1, want 1"],
    ),
    (
        "bad-url",
        ["targets.default.url=ftp://n8n.example.com/webhook"],
        [SCHEMA_ERROR, "/targets/default/url", "'ftp://n8n.example.com/webhook' does not match"],
    ),
    (
        "missing-default-url",
        ["targets.default.url=null"],
        [SCHEMA_ERROR, "/targets/default", "missing property 'url'"],
    ),
    (
        "missing-default-target",
        ["targets.default=null"],
        [SCHEMA_ERROR, "/targets", "missing property 'default'"],
    ),
    (
        "other-target-without-url",
        ["targets.backup.timeoutSeconds=5"],
        [SCHEMA_ERROR, "/targets/backup", "missing property 'url'"],
    ),
    (
        "bad-target-name",
        ["targets.Bad_Name.url=https://n8n.example.com"],
        [SCHEMA_ERROR, "'Bad_Name' does not match pattern"],
    ),
    (
        "timeout-too-long",
        ["targets.default.timeoutSeconds=301"],
        [SCHEMA_ERROR, "/targets/default/timeoutSeconds", "maximum"],
    ),
    (
        "bad-log-format",
        ["config.logFormat=xml"],
        [SCHEMA_ERROR, "/config/logFormat", "'json', 'text'"],
    ),
    ("bad-port", ["ports.callback=70000"], [SCHEMA_ERROR, "/ports/callback", "maximum"]),
    (
        "namespaced-without-namespaces",
        ["rbac.clusterWide=false"],
        [SCHEMA_ERROR, "/watchNamespaces", "minItems: got 0, want 1"],
    ),
    (
        "ingress-without-hosts",
        ["ingress.enabled=true"],
        [SCHEMA_ERROR, "/ingress/hosts", "minItems"],
    ),
    (
        "target-concurrency-zero",
        ["targets.default.concurrency=0"],
        [SCHEMA_ERROR, "/targets/default/concurrency", "minimum"],
    ),
    (
        "negative-ttl",
        ["config.ttlSecondsAfterPublished=-1"],
        [SCHEMA_ERROR, "/config/ttlSecondsAfterPublished", "minimum"],
    ),
    (
        "bad-validation-action",
        ["admissionPolicy.validationActions={Block}"],
        [SCHEMA_ERROR, "/admissionPolicy/validationActions/0"],
    ),
    (
        "unknown-callback-key",
        ["callback.replicas=2"],
        [SCHEMA_ERROR, "/callback", "additional properties 'replicas' not allowed"],
    ),
    ("crds-enabled-not-bool", ["crds.enabled=yes"], [SCHEMA_ERROR, "/crds/enabled"]),
    (
        "common-label-of-the-chart",
        ["commonLabels.app\\.kubernetes\\.io/name=x"],
        [SCHEMA_ERROR, "/commonLabels/app.kubernetes.io~1name"],
    ),
    (
        "extra-volume-named-like-the-charts",
        ["extraVolumes[0].name=tmp", "extraVolumes[0].emptyDir.medium=Memory"],
        [SCHEMA_ERROR, "/extraVolumes/0/name"],
    ),
    (
        "extra-mount-over-the-keys",
        ["extraVolumeMounts[0].name=x", "extraVolumeMounts[0].mountPath=/etc/herald/secrets"],
        [SCHEMA_ERROR, "/extraVolumeMounts/0/mountPath"],
    ),
    (
        "unknown-probe-field",
        ["probes.startup.path=/x"],
        [SCHEMA_ERROR, "/probes/startup", "additional properties 'path' not allowed"],
    ),
    (
        "success-threshold-on-liveness",
        ["probes.liveness.successThreshold=2"],
        [SCHEMA_ERROR, "/probes/liveness", "additional properties 'successThreshold'"],
    ),
    (
        "rule-override-bad-duration",
        ["prometheusRule.overrides.HeraldCircuitOpen.for=soon"],
        [SCHEMA_ERROR, "/prometheusRule/overrides/HeraldCircuitOpen/for"],
    ),
    # Not expressible in the schema; the chart fails the render with the values named.
    (
        "disabled-alert-that-does-not-exist",
        ["prometheusRule.enabled=true", "prometheusRule.disabled={HeraldNope}"],
        ['prometheusRule: no alert named "HeraldNope" in files/herald-alerts.rules.yaml'],
    ),
    (
        "override-of-an-alert-that-does-not-exist",
        ["prometheusRule.enabled=true", "prometheusRule.overrides.HeraldNope.for=5m"],
        ['prometheusRule: no alert named "HeraldNope"', "known: HeraldDispatcherStalled"],
    ),
    (
        "grace-shorter-than-a-request",
        ["targets.default.timeoutSeconds=120"],
        [
            "terminationGracePeriodSeconds (60) must be at least the longest "
            "targets.<name>.timeoutSeconds (120) + 15"
        ],
    ),
    (
        "backoff-above-max",
        ["config.maxBackoffSeconds=10"],
        ["config.maxBackoffSeconds (10) must be >= config.backoffSeconds (60)"],
    ),
    (
        "watch-namespaces-with-cluster-wide-rbac",
        ["watchNamespaces={team-a}"],
        ["watchNamespaces is only used with rbac.clusterWide=false"],
    ),
    (
        "auth-value-for-unknown-target",
        ["secret.targetAuthValues.nope=x"],
        ['secret.targetAuthValues.nope: no target "nope" with an authHeaderName'],
    ),
]


@pytest.mark.parametrize(("sets", "messages"), [pytest.param(s, m, id=i) for i, s, m in BAD_VALUES])
def test_bad_values_are_rejected_naming_the_value(
    helm: Helm, sets: list[str], messages: list[str]
) -> None:
    args = [a for s in sets for a in ("--set", s)]
    proc = helm.run("template", "herald", str(CHART), *args, check=False)
    assert proc.returncode != 0
    assert proc.stdout == ""
    for message in messages:
        assert message in proc.stderr, proc.stderr


def test_install_with_bad_values_creates_nothing(
    helm: Helm, control_plane: ControlPlane, namespace: str
) -> None:
    proc = helm.run(
        "install",
        f"bad-{namespace}",
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "config.concurrency=0",
        check=False,
    )
    assert proc.returncode != 0
    assert "/config/concurrency" in proc.stderr, proc.stderr
    listed = helm.run("list", "--namespace", namespace, "--all", "-q").stdout
    assert listed.strip() == ""
    left = control_plane.kubectl("get", "all,secrets,configmaps", "-n", namespace, "-o", "name")
    assert "herald" not in left.stdout


# --- manifests/ ---------------------------------------------------------------------------


def test_manifests_are_in_sync_with_the_chart(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(REPO / "hack" / "render-manifests.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    for name in ("herald.yaml", "kustomization.yaml", "admission-policy.yaml"):
        assert (tmp_path / name).read_text() == (MANIFESTS / name).read_text(), (
            f"manifests/{name} is stale: run hack/render-manifests.sh"
        )


def test_manifests_hold_no_secret_values() -> None:
    docs = documents((MANIFESTS / "herald.yaml").read_text())
    assert find(docs, "Secret") == []  # the keys come from a Secret the user creates
    assert one(docs, "Namespace", "herald")
    assert (
        one(docs, "CustomResourceDefinition", "scheduledposts.herald.dev")["spec"]
        == (yaml.safe_load((REPO / "crds" / "scheduledposts.herald.dev.yaml").read_text())["spec"])
    )


@pytest.fixture
def herald_namespace(control_plane: ControlPlane) -> str:
    """The manifests' fixed namespace; it must not exist before (one test uses it)."""
    absent = control_plane.kubectl("get", "namespace", "herald", check=False)
    assert absent.returncode != 0, "namespace herald already exists in the test cluster"
    return "herald"


def test_kubectl_apply_k_manifests(control_plane: ControlPlane, herald_namespace: str) -> None:
    proc = control_plane.kubectl("apply", "-k", str(MANIFESTS), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "namespace/herald created" in proc.stdout
    control_plane.kubectl(
        "get",
        "-n",
        herald_namespace,
        "deployment/herald",
        "serviceaccount/herald-operator",
        "service/herald-callback",
        "service/herald-metrics",
        "configmap/herald-config",
        "poddisruptionbudget/herald",
    )
    control_plane.kubectl(
        "get", "clusterrole/herald-operator", "clusterrolebinding/herald-operator"
    )
    labels = json.loads(
        control_plane.kubectl("get", "namespace", herald_namespace, "-o", "json").stdout
    )["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

    # The Secret the header of herald.yaml tells users to create, created that way.
    control_plane.kubectl(
        "-n",
        herald_namespace,
        "create",
        "secret",
        "generic",
        "herald-keys",
        f"--from-literal=signing-key=whsec_{base64.b64encode(secrets.token_bytes(32)).decode()}",
        f"--from-literal=callback-key={secrets.token_hex(32)}",
    )
    volumes = json.loads(
        control_plane.kubectl(
            "get", "deployment", "herald", "-n", herald_namespace, "-o", "json"
        ).stdout
    )["spec"]["template"]["spec"]["volumes"]
    assert {v["secret"]["secretName"] for v in volumes if v["name"].endswith("-secrets")} == {
        "herald-keys"
    }

    # Nothing differs from what is applied (server-side diff; a second client-side apply
    # reports Deployment/PDB "configured" for kubectl's own patch quirks, yet changes nothing).
    diff = control_plane.kubectl("diff", "-k", str(MANIFESTS), check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr


@pytest.mark.parametrize("mode", ["sidecar", "separate"])
def test_operator_and_callback_receiver_work_end_to_end_as_the_charts_service_accounts(
    helm: Helm, control_plane: ControlPlane, namespace: str, tmp_path: Path, mode: str
) -> None:
    """RBAC proven, not assumed: the real processes, authenticated only by TokenRequest
    tokens of the chart's ServiceAccounts (what the kubelet projects into the pods), take a
    post from Scheduled to Published on the RBAC-enforcing API server, and their Events
    are recorded. As a sidecar, the callback receiver uses the pod's (operator's) token;
    with callback.separateDeployment, the token of its own ServiceAccount."""
    from tests.e2e.conftest import Posts, in_seconds
    from tests.support.fake_n8n import FakeN8n
    from tests.support.herald_proc import start_callback_server, start_operator

    release = f"proof-{namespace}"
    fullname = f"{release}-herald"
    helm.run(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "rbac.clusterWide=false",
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--set",
        f"callback.separateDeployment={str(mode == 'separate').lower()}",
    )
    deployments = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in json.loads(
            control_plane.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout
        )["items"]
    }
    # The ServiceAccount each process runs as is the one its pod template names.
    identities = {
        "operator": deployments[fullname]["serviceAccountName"],
        "callback": deployments.get(f"{fullname}-callback", deployments[fullname])[
            "serviceAccountName"
        ],
    }
    expected = "callback" if mode == "separate" else "operator"
    assert identities == {"operator": f"{fullname}-operator", "callback": f"{fullname}-{expected}"}
    configs = {}
    for role, sa in identities.items():
        token = sa_token(control_plane, namespace, sa)
        configs[role] = control_plane.write_kubeconfig(
            tmp_path / f"{role}.kubeconfig", role, token=token
        )
    # The keys the chart generated, as the pods would read them.
    keys = {
        k: base64.b64decode(v).decode()
        for k, v in secret_data(control_plane, namespace, f"{fullname}-keys").items()
    }
    # Routine Events on: the Published Event proves the receiver may create Events.
    sidecar, callback_base = start_callback_server(
        configs["callback"],
        tmp_path / "cb.log",
        callback_key=keys["callback-key"],
        routine_events="true",
    )
    try:
        with FakeN8n(auto_callback=True) as n8n:
            op = start_operator(
                configs["operator"],
                n8n.url,
                tmp_path / "op.log",
                namespaces=json.dumps([namespace]),
                callback_url=callback_base,
                signing_key=keys["signing-key"],
                callback_key=keys["callback-key"],
                routine_events="true",
            )
            try:
                cert, key = control_plane.user_credentials("proof-admin", ["system:masters"])
                pem = tmp_path / "admin.pem"
                pem.write_bytes(cert + key)
                import ssl

                tls = ssl.create_default_context(cafile=str(control_plane.ca_file))
                tls.load_cert_chain(str(pem))
                transport = RetryingTransport(verify=tls)
                with httpx.Client(base_url=control_plane.server, transport=transport) as client:
                    posts = Posts(control_plane, client, namespace)
                    posts.create("proof", in_seconds(1))
                    status = posts.wait_phase("proof", "Published", timeout=30)
                    assert status["externalUrl"]
                    reasons = {e["reason"] for e in posts.events("proof")}
                    assert "Published" in reasons, reasons
                # The generated "whsec_..." key works as a Standard Webhooks secret: the
                # dispatch verifies as a receiver holding that secret would verify it.
                (dispatch,) = n8n.for_post("proof")
                h = {k.lower(): v for k, v in dispatch.headers.items()}
                signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + dispatch.raw
                secret = base64.b64decode(keys["signing-key"].removeprefix("whsec_"))
                expected_sig = base64.b64encode(
                    hmac.new(secret, signed, hashlib.sha256).digest()
                ).decode()
                assert f"v1,{expected_sig}" in h["webhook-signature"].split(), h
                assert "Forbidden" not in op.log(), op.log()[-3000:]
                assert "Forbidden" not in sidecar.log(), sidecar.log()[-3000:]
            finally:
                op.stop()
    finally:
        sidecar.stop()


# --- kubeVersion, extension points, the values table ---------------------------------------


def test_kube_version_below_the_minimum_is_refused_clearly(helm: Helm) -> None:
    """selectableFields (GA in 1.32) and the admission policy (1.30) set the floor."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.32.0-0"
    for version in ("1.31.9", "1.29.0"):
        proc = helm.run("template", "herald", str(CHART), "--kube-version", version, check=False)
        assert proc.returncode != 0
        assert (
            f"chart requires kubeVersion: >=1.32.0-0 which is incompatible with "
            f"Kubernetes v{version}"
        ) in proc.stderr, proc.stderr
    # Providers' versions carry a pre-release-like suffix.
    for version in ("1.32.0", "v1.32.3-eks-4b2c1d0"):
        proc = helm.run("template", "herald", str(CHART), "--kube-version", version, check=False)
        assert proc.returncode == 0, proc.stderr


def test_extension_points_render_where_users_expect_them(helm: Helm) -> None:
    docs = documents(helm.template("herald", "herald", EVERYTHING))
    ext = extensions("grafana")

    # commonLabels on every object of the chart (extraObjects are the user's own) and pod,
    # never in a selector.
    for doc in [d for d in docs if "-extra-" not in d["metadata"]["name"]]:
        assert doc["metadata"]["labels"]["example.com/cost-centre"] == "social", doc["kind"]
    deployments = find(docs, "Deployment")
    assert len(deployments) == 2
    for d in deployments:
        assert d["metadata"]["annotations"] == {"example.com/reload": "true"}
        pod = d["spec"]["template"]
        assert pod["metadata"]["labels"]["example.com/cost-centre"] == "social"
        assert "example.com/cost-centre" not in d["spec"]["selector"]["matchLabels"]
        assert pod["metadata"]["annotations"]["example.com/team"] == "social"
        spec = pod["spec"]
        assert spec["priorityClassName"] == "system-cluster-critical"
        assert spec["topologySpreadConstraints"] == ext["topologySpreadConstraints"]
        assert ext["extraVolumes"][0] in spec["volumes"]
        for c in spec["containers"]:
            assert ext["extraVolumeMounts"][0] in c["volumeMounts"]
            assert {"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"} in c["env"]
            port = "health" if c["name"] == "operator" else "callback"
            assert c["startupProbe"] == {
                "httpGet": {"path": "/healthz", "port": port},
                "initialDelaySeconds": 0,
                "periodSeconds": 5,
                "timeoutSeconds": 2,
                "failureThreshold": 24,
            }
            assert c["livenessProbe"]["periodSeconds"] == 20
            assert c["livenessProbe"]["initialDelaySeconds"] == 0
            assert c["readinessProbe"]["successThreshold"] == 2
            assert c["readinessProbe"]["periodSeconds"] == 7
    operator = one(docs, "Deployment", "herald")
    receiver = one(docs, "Deployment", "herald-callback")
    assert container(operator, "operator")["args"] == ["run", "--operator-flag"]
    assert container(receiver, "callback")["args"] == ["callback-server", "--callback-flag"]

    # ServiceAccount names and annotations; RBAC binds the named accounts.
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "herald-runner"
    assert receiver["spec"]["template"]["spec"]["serviceAccountName"] == "herald-receiver"
    for name in ("herald-runner", "herald-receiver"):
        sa = one(docs, "ServiceAccount", name)
        assert sa["metadata"]["annotations"] == {"iam.example.com/role": "herald"}
    subjects = {s["name"] for b in find(docs, "RoleBinding") for s in b["subjects"]}
    assert subjects == {"herald-runner", "herald-receiver", "herald-test"}

    # extraObjects, through tpl.
    assert one(docs, "ConfigMap", "herald-extra-map")["data"] == {"namespace": "herald"}
    assert one(docs, "ConfigMap", "herald-extra-string")

    # ServiceMonitor elsewhere, still scraping the release namespace, relabelled.
    monitor = one(docs, "ServiceMonitor", "herald")
    assert monitor["metadata"]["namespace"] == "grafana"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["herald"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["relabelings"] == ext["serviceMonitor"]["relabelings"]
        assert endpoint["metricRelabelings"] == ext["serviceMonitor"]["metricRelabelings"]

    # PrometheusRule: one alert left out, one changed, the others as shipped.
    shipped = {
        r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
    }
    rule_obj = one(docs, "PrometheusRule", "herald")
    assert rule_obj["metadata"]["namespace"] == "grafana"
    rendered = {r["alert"]: r for g in rule_obj["spec"]["groups"] for r in g["rules"]}
    assert set(rendered) == set(shipped) - {"HeraldBacklogGrowing"}
    changed = rendered.pop("HeraldCircuitOpen")
    original = shipped["HeraldCircuitOpen"]
    assert changed["for"] == "10m"
    assert changed["labels"] == {**original["labels"], "severity": "critical", "team": "social"}
    assert changed["annotations"] == {
        **original["annotations"],
        "runbook_url": "https://wiki.example.com/herald",
    }
    assert changed["expr"] == original["expr"]
    assert all(rule == shipped[name] for name, rule in rendered.items())

    # The CRD: the generated file's, with the chart's labels and the keep annotation.
    crd = one(docs, "CustomResourceDefinition", "scheduledposts.herald.dev")
    assert crd["spec"] == yaml.safe_load(CHART_CRD.read_text())["spec"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"

    # Your own ServiceAccounts; a CRD without the keep annotation.
    own = documents(
        helm.template(
            "herald",
            "herald",
            {
                "serviceAccount": {"create": False, "name": "mine"},
                "crds": {"enabled": True, "keep": False},
            },
        )
    )
    assert [sa["metadata"]["name"] for sa in find(own, "ServiceAccount")] == ["herald-test"]
    assert {s["name"] for b in find(own, "ClusterRoleBinding") for s in b["subjects"]} == {"mine"}
    crds = find(own, "CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "clustersocialaccounts.herald.dev",
        "publications.herald.dev",
        "scheduledposts.herald.dev",
        "socialaccounts.herald.dev",
    ]
    assert all("annotations" not in crd["metadata"] for crd in crds)


def test_every_value_has_a_described_schema_entry() -> None:
    """values.schema.json covers each row of the values table, with a description (the
    schema's additionalProperties: false already refuses values it does not know)."""
    table = runpy.run_path(str(REPO / "hack" / "values_table.py"), run_name="values_table")
    text = (CHART / "values.yaml").read_text()
    rows = table["rows"](yaml.safe_load(text), table["comments"](text))
    schema = json.loads((CHART / "values.schema.json").read_text())

    def entry(path: list[str]) -> dict[str, Any] | None:
        node: dict[str, Any] = schema
        for key in path:
            if "$ref" in node:
                node = schema["definitions"][node["$ref"].rpartition("/")[2]]
            if key in node.get("properties", {}):
                node = node["properties"][key]
            elif isinstance(node.get("additionalProperties"), dict):
                node = node["additionalProperties"]
            else:
                return None
        return node

    assert len(rows) > 100
    undescribed = [key for key, *_ in rows if "description" not in (entry(key.split(".")) or {})]
    assert undescribed == []


def values_table(*args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "hack" / "values_table.py"), *args, str(chart)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_values_table_is_current_and_documents_every_value(tmp_path: Path) -> None:
    proc = values_table("--check")
    assert proc.returncode == 0, proc.stderr
    readme = (CHART / "README.md").read_text()
    assert "| crds.enabled | bool | `false` | Install the CRD with this release" in readme
    assert "| targets.default.concurrency | int | `null` |" in readme
    assert "&lt;fullname&gt;-operator" in readme  # not an HTML tag to a Markdown renderer

    chart = tmp_path / "chart"
    chart.mkdir()
    for name in ("values.yaml", "README.md"):
        shutil.copy(CHART / name, chart / name)
    values = (CHART / "values.yaml").read_text()
    # A changed default: --check says the table is stale; a run brings it up to date.
    (chart / "values.yaml").write_text(values.replace("replicaCount: 2", "replicaCount: 3"))
    proc = values_table("--check", chart=chart)
    assert proc.returncode == 1
    assert "the values table is stale: run hack/values_table.py" in proc.stderr
    assert values_table(chart=chart).returncode == 0
    assert "| replicaCount | int | `3` | Number of pods." in (chart / "README.md").read_text()
    # An undocumented value fails, naming it, and the README is left alone.
    before = (chart / "README.md").read_text()
    (chart / "values.yaml").write_text(values + "\nnewSetting:\n  deep: 1\n")
    proc = values_table(chart=chart)
    assert proc.returncode == 2
    assert "newSetting.deep: undocumented" in proc.stderr
    assert (chart / "README.md").read_text() == before


# --- the CRD as a release object, and `helm test` -----------------------------------------


def test_helm_upgrade_applies_a_changed_crd_and_uninstall_keeps_it(
    helm: Helm, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """crds.enabled makes the CRD a release object: `helm upgrade` applies the next chart's
    CRD, and crds.keep decides whether `helm uninstall` leaves it. The cluster's own
    ScheduledPost CRD is left alone: the chart is copied with its CRD moved into a group of
    this test's own."""
    chart = tmp_path / "herald"
    shutil.copytree(CHART, chart)
    group = f"{namespace}.herald.test"
    name = f"scheduledposts.{group}"
    crd = yaml.safe_load(CHART_CRD.read_text())
    crd["metadata"]["name"] = name
    crd["spec"]["group"] = group
    crd_file = chart / "files" / "crds" / CHART_CRD.name
    crd_file.write_text(yaml.safe_dump(crd))
    # The other CRDs move with it (the cluster's own stay untouched).
    for plural in ("publications", "socialaccounts", "clustersocialaccounts"):
        other_file = chart / "files" / "crds" / f"{plural}.herald.dev.yaml"
        other_crd = yaml.safe_load(other_file.read_text())
        other_crd["metadata"]["name"] = f"{plural}.{group}"
        other_crd["spec"]["group"] = group
        other_file.write_text(yaml.safe_dump(other_crd))
    release = f"crd-{namespace}"

    def served() -> dict[str, Any]:
        out = control_plane.kubectl("get", "crd", name, "-o", "json").stdout
        got: dict[str, Any] = json.loads(out)
        return got

    def columns() -> list[str]:
        (version,) = served()["spec"]["versions"]
        return [c["name"] for c in version["additionalPrinterColumns"]]

    def absent() -> bool:
        proc = control_plane.kubectl("get", "crd", name, check=False)
        return proc.returncode != 0 and "NotFound" in proc.stderr

    install = ("install", release, str(chart), "--namespace", namespace)
    assert absent()
    helm.run(*install, "--set", "crds.enabled=true")
    meta = served()["metadata"]
    assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
    assert meta["annotations"]["meta.helm.sh/release-name"] == release
    assert "Upgraded" not in columns()

    # The next chart's CRD has another printer column; `helm upgrade` applies it.
    crd["spec"]["versions"][0]["additionalPrinterColumns"].append(
        {"name": "Upgraded", "type": "string", "jsonPath": ".spec.account"}
    )
    crd_file.write_text(yaml.safe_dump(crd))
    helm.run("upgrade", release, str(chart), "--namespace", namespace, "--reuse-values")
    assert "Upgraded" in columns()
    assert served()["status"]["acceptedNames"]["kind"] == "ScheduledPost"

    # crds.keep (default): uninstalling leaves the CRD, and so every post.
    uninstall = helm.run("uninstall", release, "--namespace", namespace)
    assert "These resources were kept due to the resource policy" in uninstall.stdout
    assert f"[CustomResourceDefinition] {name}" in uninstall.stdout
    assert not absent()

    # Reinstalled (the same release takes its kept CRD back) with crds.keep=false, the CRD
    # goes with the release. (Helm decides by the release's manifest: the kept object's
    # live annotation, which adopting it does not remove, does not count.)
    helm.run(*install, "--set", "crds.enabled=true", "--set", "crds.keep=false")
    assert served()["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
    uninstall = helm.run("uninstall", release, "--namespace", namespace)
    assert "kept due to the resource policy" not in uninstall.stdout
    # Helm's part is the DELETE: the CRD is gone, or terminating under the API server's own
    # finalizer. The finalizer's end is not waited for: it lists the (here, no) instances
    # first, and a CRD whose storage was rebuilt by the upgrade can answer "storage is
    # (re)initializing"; the finalizer then retries on an exponential backoff, so the CRD
    # can stay Terminating for minutes (a full run here: still there after 60 s, condition
    # InstanceDeletionFailed; operator-framework/operator-controller#1437 saw the same).
    # `helm uninstall` returns once its DELETEs are accepted, so one read tells.
    left = control_plane.kubectl("get", "crd", name, "-o", "json", check=False)
    if left.returncode:
        assert "NotFound" in left.stderr, left.stderr
    else:
        meta = json.loads(left.stdout)["metadata"]
        assert meta.get("deletionTimestamp"), f"helm uninstall did not delete the CRD: {meta}"
        assert "customresourcecleanup.apiextensions.k8s.io" in meta["finalizers"]


def test_helm_test_checks_the_crd_and_the_rollout(
    helm: Helm, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """The real `helm test`. There is no kubelet here, so this test is the node: it runs the
    Pod `helm test` creates, with the Pod's own command and environment and a token of the
    Pod's ServiceAccount against the real API server, and reports the exit code as the
    Pod's phase, which `helm test` waits for."""
    release = f"ht-{namespace}"
    fullname = f"{release}-herald"
    helm.run(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "callback.separateDeployment=true",
        "--set",
        "test.timeoutSeconds=2",
    )
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    shutil.copy(control_plane.ca_file, sa_dir / "ca.crt")

    def run_check(pod: dict[str, Any], **overrides: str) -> subprocess.CompletedProcess[str]:
        """The Pod's container, as the kubelet would run it, here."""
        (check,) = pod["spec"]["containers"]
        assert check["command"] == ["python", "-c"]
        token = sa_token(control_plane, namespace, pod["spec"]["serviceAccountName"])
        (sa_dir / "token").write_text(token)
        env = {e["name"]: e["value"] for e in check["env"]}
        env.update(
            HERALD_TEST_SA_DIR=str(sa_dir),
            KUBERNETES_SERVICE_HOST="127.0.0.1",
            KUBERNETES_SERVICE_PORT=str(control_plane.api_port),
            **overrides,
        )
        return subprocess.run(
            [sys.executable, "-c", *check["args"]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def helm_test(
        **overrides: str,
    ) -> tuple[subprocess.CompletedProcess[str], str, subprocess.CompletedProcess[str] | None]:
        """`helm test`, with this test as the node: its result, the check's output, and,
        given overrides, the check run once more with them while the hook's objects exist."""
        proc = helm.start("test", release, "--namespace", namespace, "--timeout", "60s")
        try:
            deadline = time.monotonic() + 30
            while True:
                got = control_plane.kubectl(
                    "get", "pod", f"{fullname}-test", "-n", namespace, "-o", "json", check=False
                )
                if got.returncode == 0:
                    pod = json.loads(got.stdout)
                    if pod["status"].get("phase") == "Pending":
                        break
                assert time.monotonic() < deadline, "helm test created no pod"
                time.sleep(0.2)
            ran = run_check(pod)
            again = run_check(pod, **overrides) if overrides else None
            phase = "Succeeded" if ran.returncode == 0 else "Failed"
            control_plane.kubectl(
                "patch",
                "pod",
                f"{fullname}-test",
                "-n",
                namespace,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": {"phase": phase}}),
            )
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
            proc.wait(timeout=10)
        return (
            subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
            ran.stdout + ran.stderr,
            again,
        )

    pod = one(documents(helm.template(release, namespace)), "Pod", f"{fullname}-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"

    # Nothing runs the Deployments here: they never roll out, and the test says so. And a
    # CRD that is not served fails the check too, naming it.
    result, output, missing = helm_test(
        HERALD_TEST_PLURAL="nothings", HERALD_TEST_TIMEOUT_SECONDS="0"
    )
    assert result.returncode != 0
    assert "Phase:          Failed" in result.stdout, result.stdout + result.stderr
    assert "not ready after 2 s:" in output
    assert f"deployment {fullname}: the new spec is not observed yet" in output
    assert f"deployment {fullname}-callback" in output
    assert missing is not None
    assert missing.returncode == 1
    assert "does not serve nothings.herald.dev/v1alpha1" in missing.stderr

    # What the Deployment controller would write once every replica is available.
    for deployment in (fullname, f"{fullname}-callback"):
        got = json.loads(
            control_plane.kubectl(
                "get", "deployment", deployment, "-n", namespace, "-o", "json"
            ).stdout
        )
        replicas = got["spec"]["replicas"]
        status = {
            "observedGeneration": got["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
        control_plane.kubectl(
            "patch",
            "deployment",
            deployment,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )
    result, output, _ = helm_test()
    assert result.returncode == 0, result.stdout + result.stderr + output
    assert "Phase:          Succeeded" in result.stdout
    assert "ok: scheduledposts.herald.dev/v1alpha1 is served;" in output
    assert f"rolled out and available: {fullname}, {fullname}-callback" in output
