"""docker compose (deploy/compose.yaml), the images' Dockerfiles and the config they ship.

No Docker engine runs here, and the Docker CLI found here has no ``compose`` plugin, so the compose file is checked
against the Compose Specification's JSON schema (vendored by ``check-jsonschema`` from PyPI) — ``docker compose
config`` is run as well where the plugin exists. Beyond the schema: the services and profiles (GPU and CPU vLLM both
answering as ``vllm``), the shipped gateway config is a valid tandem config whose hosts are compose services, every
``COPY`` source of the Dockerfiles exists, and the one-shot migration command (shared with the Helm chart's Job)
really migrates a database.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_file_matches_the_compose_spec(compose):
    jsonschema = pytest.importorskip("jsonschema")
    check = pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (vendors the compose spec)")
    schema_path = Path(check.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_path.read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.validators.validator_for(schema)(schema).iter_errors(compose)]
    assert errors == []
    broken = dict(compose, services={"gateway": {**compose["services"]["gateway"], "ports": [{"bogus": 1}]}})
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))  # the check can fail


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_compose_config_where_the_plugin_exists():
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker CLI here has no compose plugin")
    res = subprocess.run(["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "--profile", "gpu", "--profile",
                          "cpu", "config", "-q"], capture_output=True, text=True, env={"TANDEM_ADMIN_KEY": "x"})
    assert res.returncode == 0, res.stderr


def test_services_and_profiles(compose):
    s = compose["services"]
    assert {"gateway", "migrate", "redis", "postgres", "vllm", "vllm-cpu"} <= set(s)
    assert s["vllm"]["profiles"] == ["gpu"] and s["vllm-cpu"]["profiles"] == ["cpu"]
    gpu = s["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert "vllm" in s["vllm-cpu"]["networks"]["default"]["aliases"]
    assert s["vllm"]["command"] == s["vllm-cpu"]["command"]  # the same model under the same name
    dep = s["gateway"]["depends_on"]
    assert dep["migrate"]["condition"] == "service_completed_successfully"
    assert dep["redis"]["condition"] == dep["postgres"]["condition"] == "service_healthy"
    assert s["gateway"]["deploy"]["replicas"] >= 2


def test_shipped_config_is_valid_and_names_compose_services(compose):
    cfg = load_config(DEPLOY / "config" / "tandem.yaml")
    hosts = set(compose["services"]) | {a for svc in compose["services"].values()
                                        for a in (svc.get("networks") or {}).get("default", {}).get("aliases", [])}
    assert urlsplit(cfg.storage.database_url).hostname in hosts
    assert urlsplit(cfg.storage.redis_url).hostname in hosts
    for b in cfg.backends:
        assert urlsplit(b.base_url).hostname in hosts
    pg = compose["services"]["postgres"]["environment"]
    db = urlsplit(cfg.storage.database_url)
    assert (db.username, db.password, db.path.lstrip("/")) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"],
                                                               pg["POSTGRES_DB"])
    assert cfg.auth.require_keys and cfg.server.host == "0.0.0.0"
    mounts = compose["services"]["gateway"]["volumes"]
    assert "./config/tandem.yaml:/etc/tandem/tandem.yaml:ro" in mounts


@pytest.mark.parametrize("dockerfile, context", [("Dockerfile", ROOT), ("vllm-cpu.Dockerfile", DEPLOY)])
def test_dockerfile_copy_sources_exist(dockerfile, context):
    text = (DEPLOY / dockerfile).read_text()
    assert text.count("FROM ") >= 1
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (context / src).exists(), f"{dockerfile}: COPY source {src} is missing"


def test_migration_command_migrates_a_database(compose, tmp_path):
    """The compose ``migrate`` service's command (the Helm Job runs the same) creates the schema."""
    code = compose["services"]["migrate"]["command"][0]
    helm_job = (DEPLOY / "helm" / "tandem" / "templates" / "migrations-job.yaml").read_text()
    assert code in helm_job
    cfg = yaml.safe_load((DEPLOY / "config" / "tandem.yaml").read_text())
    cfg["storage"]["database_url"] = f"sqlite:///{tmp_path / 'm.db'}"
    (tmp_path / "tandem.yaml").write_text(yaml.safe_dump(cfg))
    res = subprocess.run([sys.executable, "-c", code.replace("/etc/tandem/tandem.yaml", str(tmp_path / "tandem.yaml"))],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    import sqlite3

    tables = {r[0] for r in sqlite3.connect(tmp_path / "m.db").execute("select name from sqlite_master")}
    assert {"requests", "feedback", "api_keys", "alembic_version"} <= tables
