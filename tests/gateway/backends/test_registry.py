"""The backends registry: built-in kinds, building from configs, unknown kinds."""

from __future__ import annotations

import pytest

from gateway.backends.base import Backend
from gateway.backends.litellm_backend import LiteLLMBackend
from gateway.backends.openai_http import OpenAIHTTPBackend
from gateway.backends.registry import BackendRegistry, build_backend, default_backend_registry
from gateway.config import LiteLLMBackendConfig, OpenAIBackendConfig
from gateway.errors import ConfigError


def test_default_kinds_and_fresh_instances():
    reg = default_backend_registry()
    assert reg.kinds() == ["litellm", "local", "openai", "vllm"]
    assert reg is not default_backend_registry()


def test_build_openai_vllm_and_litellm():
    reg = default_backend_registry()
    vllm = build_backend(OpenAIBackendConfig(name="v", kind="vllm", base_url="http://127.0.0.1:1/v1"), reg)
    assert isinstance(vllm, OpenAIHTTPBackend) and vllm.kind == "vllm" and vllm.name == "v"
    lite = build_backend(LiteLLMBackendConfig(name="m", model="openai/gpt-4o-mini"), reg)
    assert isinstance(lite, LiteLLMBackend) and lite.price.input > 0


def test_unknown_kind_and_duplicates():
    reg = BackendRegistry()

    class Cfg:
        kind = "nope"

    with pytest.raises(ConfigError):
        build_backend(Cfg(), reg)
    reg.register("x", lambda cfg: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError):
        reg.register("x", lambda cfg: None)  # type: ignore[arg-type, return-value]
    made: list[object] = []

    def factory(cfg: object) -> Backend:
        made.append(cfg)
        return "built"  # type: ignore[return-value]

    reg.register("x", factory, replace=True)
    cfg = Cfg()
    cfg.kind = "x"
    assert build_backend(cfg, reg) == "built" and made == [cfg]
