"""The Helm chart (deploy/helm/tandem), rendered by Helm's own engine and checked against Kubernetes' schemas.

Rendering uses ``helm-python-sdk`` (PyPI; it bundles Helm v4's Go SDK as a native library, so no ``helm`` binary is
needed); every rendered object is validated with ``kubernetes-validate`` (PyPI; the Kubernetes OpenAPI schemas,
strict: unknown fields fail) for the oldest and newest Kubernetes versions the chart supports. Beyond the schemas:
the gateway config the chart writes is a valid tandem config whose URLs name the Services the chart creates, every
Service and the HPA and PDB select what they should, there is one vLLM Deployment per model, and external
Redis/Postgres URLs replace the in-chart servers.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk (Helm's engine for rendering)")
kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")

from gateway.config import parse_config  # noqa: E402

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "tandem"
KUBE_VERSIONS = ["1.25.0", "1.37.0"]
TWO_MODELS = {"vllm": {"models": [
    {"name": "small", "model": "Qwen/Qwen2.5-0.5B-Instruct", "gpus": 1, "price": {"output_per_mtok": 0.2}},
    {"name": "large", "model": "Qwen/Qwen2.5-7B-Instruct", "gpus": 2, "replicas": 2, "args": ["--max-logprobs", "20"]},
]}}


def render(values: dict | None = None) -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values or {}, name="rel", namespace="ns")
    docs = []
    for name, text in out.items():
        if name.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def gateway_config(docs: list[dict]):
    secret = by_kind(docs, "Secret")["rel-tandem-config"]
    return parse_config(yaml.safe_load(secret["stringData"]["tandem.yaml"])), secret


def test_chart_lints_clean():
    res = helm.lint(str(CHART), strict=False)
    assert res["errors"] == [], res
    assert not [m for m in res["messages"] if m["severity"] > 1], res


@pytest.mark.parametrize("values", [{}, TWO_MODELS, {"gateway": {"autoscaling": {"enabled": False}}},
                                    {"redis": {"enabled": False, "externalUrl": "redis://r:6379/0"},
                                     "postgres": {"enabled": False, "externalUrl": "postgresql+psycopg://u:p@db/t"}}],
                         ids=["defaults", "two-models", "no-hpa", "external-stores"])
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_rendered_object_matches_the_kubernetes_schema(values, kube):
    docs = render(values)
    assert docs
    for d in docs:
        kv.validate(d, kube, strict=True)  # raises ValidationError naming the field


def test_default_release_has_every_part():
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Deployment", "Deployment", "Deployment", "StatefulSet", "Service", "Service", "Service",
                            "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job", "Secret"])
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["rel-tandem-gateway"]
    assert hpa["spec"]["scaleTargetRef"]["name"] in by_kind(docs, "Deployment")
    assert "replicas" not in by_kind(docs, "Deployment")["rel-tandem-gateway"]["spec"]  # the HPA owns it


def _pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def test_services_pdb_and_hpa_select_their_workloads():
    docs = render(TWO_MODELS)
    workloads = {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}
    for name, svc in by_kind(docs, "Service").items():
        sel = svc["spec"]["selector"]
        matched = [w for w, d in workloads.items() if sel.items() <= _pod_labels(d).items()]
        assert matched == [name], (name, matched)
        ports = {p["name"] for c in workloads[name]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    pdb = by_kind(docs, "PodDisruptionBudget")["rel-tandem-gateway"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= _pod_labels(workloads["rel-tandem-gateway"]).items()


def test_one_vllm_deployment_per_model_and_config_points_at_them():
    docs = render(TWO_MODELS)
    deps = by_kind(docs, "Deployment")
    services = set(by_kind(docs, "Service"))
    assert {"rel-tandem-vllm-small", "rel-tandem-vllm-large"} <= set(deps)
    large = deps["rel-tandem-vllm-large"]
    assert large["spec"]["replicas"] == 2
    c = large["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert c["args"][:4] == ["--model", "Qwen/Qwen2.5-7B-Instruct", "--served-model-name", "large"]
    cfg, secret = gateway_config(docs)
    assert {b.name for b in cfg.backends} == {"small", "large"}
    assert {r.name for r in cfg.routes} == {"small", "large"}
    for b in cfg.backends:
        assert urlsplit(b.base_url).hostname in services
        assert b.model == b.name  # served under the model entry's name
    db, redis = urlsplit(cfg.storage.database_url), urlsplit(cfg.storage.redis_url)
    assert db.hostname in services and redis.hostname in services
    assert db.password == secret["stringData"]["postgres-password"]
    assert cfg.server.host == "0.0.0.0" and cfg.auth.admin_key_env == "TANDEM_ADMIN_KEY"


def test_external_stores_replace_the_in_chart_servers():
    docs = render({"redis": {"enabled": False, "externalUrl": "redis://cache.example:6379/2"},
                   "postgres": {"enabled": False, "externalUrl": "postgresql+psycopg://u:p@db.example:5432/t"}})
    names = {d["metadata"]["name"] for d in docs}
    assert not any("redis" in n or "postgres" in n for n in names)
    cfg, _ = gateway_config(docs)
    assert cfg.storage.redis_url == "redis://cache.example:6379/2"
    assert cfg.storage.database_url == "postgresql+psycopg://u:p@db.example:5432/t"


def test_external_store_without_a_url_is_refused():
    with pytest.raises(helm.HelmError, match="externalUrl"):
        render({"postgres": {"enabled": False}})


def test_values_schema_refuses_bad_values():
    with pytest.raises(helm.HelmError):
        render({"vllm": {"models": [{"name": "Bad_Name", "model": "x"}]}})
    with pytest.raises(helm.HelmError):
        render({"gateway": {"port": 70000}})


def test_admin_key_from_an_existing_secret():
    docs = render({"gateway": {"adminKey": {"existingSecret": "ops-keys", "existingSecretKey": "tandem"}}})
    env = by_kind(docs, "Deployment")["rel-tandem-gateway"]["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = next(e for e in env if e["name"] == "TANDEM_ADMIN_KEY")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "ops-keys", "key": "tandem"}
    assert "admin-key" not in by_kind(docs, "Secret")["rel-tandem-config"]["stringData"]


def test_no_hpa_means_fixed_replicas():
    docs = render({"gateway": {"autoscaling": {"enabled": False}, "replicas": 3}})
    assert "HorizontalPodAutoscaler" not in {d["kind"] for d in docs}
    assert by_kind(docs, "Deployment")["rel-tandem-gateway"]["spec"]["replicas"] == 3
