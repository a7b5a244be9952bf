"""The backends registry: which factory builds a backend of each config ``kind``.

A :class:`BackendRegistry` maps a kind (``openai``, ``vllm``, ``litellm``, ``local``, …) to a factory taking the
backend's config. :func:`default_backend_registry` returns a fresh one with the built-in kinds; their modules are
imported only when a backend of that kind is built (litellm and torch are slow to import). :func:`build_backend`
builds one backend. There are no module-level singletons: whoever builds the gateway's state owns its registry.

What it leaves out: reading configs (``gateway.config``) and wiring backends into routes (``gateway.state``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.backends.base import Backend
from gateway.errors import ConfigError

BackendFactory = Callable[[Any], Backend]


class BackendRegistry:
    """Kind → factory (a callable taking the backend's config and returning a :class:`Backend`)."""

    def __init__(self) -> None:
        self._factories: dict[str, BackendFactory] = {}

    def register(self, kind: str, factory: BackendFactory, *, replace: bool = False) -> None:
        if kind in self._factories and not replace:
            raise ValueError(f"backend kind '{kind}' is already registered")
        self._factories[kind] = factory

    def kinds(self) -> list[str]:
        return sorted(self._factories)

    def factory(self, kind: str) -> BackendFactory:
        try:
            return self._factories[kind]
        except KeyError:
            raise ConfigError(f"unknown backend kind '{kind}' (known: {', '.join(self.kinds())})",
                              param="kind") from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._factories


def _openai(cfg: Any) -> Backend:
    from gateway.backends.openai_http import OpenAIHTTPBackend

    return OpenAIHTTPBackend.from_config(cfg)


def _litellm(cfg: Any) -> Backend:
    from gateway.backends.litellm_backend import LiteLLMBackend

    return LiteLLMBackend.from_config(cfg)


def _local(cfg: Any) -> Backend:
    from gateway.backends.local import LocalBackend

    return LocalBackend.from_config(cfg)


def default_backend_registry() -> BackendRegistry:
    """A new registry with the built-in kinds: openai, vllm, litellm, local."""
    reg = BackendRegistry()
    reg.register("openai", _openai)
    reg.register("vllm", _openai)
    reg.register("litellm", _litellm)
    reg.register("local", _local)
    return reg


def build_backend(cfg: Any, registry: BackendRegistry) -> Backend:
    """Build the backend a config describes (``cfg.kind`` picks the factory)."""
    return registry.factory(cfg.kind)(cfg)
