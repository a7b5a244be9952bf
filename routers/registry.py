"""Router registry: name → router class, and the default set of routers this package ships.

`RouterRegistry` is a plain object (no module-level singleton); `default_router_registry()` builds a fresh one.
Left out: loading third-party routers from entry points.
"""

from __future__ import annotations

from typing import Any

from routers.base import Router


class RouterRegistry:
    def __init__(self) -> None:
        self._classes: dict[str, type[Router]] = {}

    def register(self, name: str, cls: type[Router]) -> None:
        if name in self._classes:
            raise ValueError(f"router {name!r} is already registered")
        self._classes[name] = cls

    def names(self) -> list[str]:
        return list(self._classes)

    def get(self, name: str) -> type[Router]:
        try:
            return self._classes[name]
        except KeyError:
            raise KeyError(f"unknown router {name!r}; known: {', '.join(self._classes)}") from None

    def create(self, name: str, **kwargs: Any) -> Router:
        return self.get(name)(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._classes


def default_router_registry() -> RouterRegistry:
    # imported here to defer torch (routers.ellie and routers.mf import it) until a registry is built
    from routers.baselines import BestRouter, CheapestRouter, KnnRouter, RandomRouter
    from routers.calibrated import CalibratedRouter
    from routers.coe import CoERouter
    from routers.ellie import (
        EllieCascadeRouter,
        EllieClassifierRouter,
        EllieHeuristicRouter,
        EllieKnnRouter,
        ElliePreferenceRouter,
    )
    from routers.glider import GliderRouter
    from routers.mf import MFRouter

    reg = RouterRegistry()
    for cls in (
        RandomRouter,
        CheapestRouter,
        BestRouter,
        KnnRouter,
        MFRouter,
        CalibratedRouter,
        EllieHeuristicRouter,
        EllieKnnRouter,
        EllieClassifierRouter,
        EllieCascadeRouter,
        ElliePreferenceRouter,
        CoERouter,
        GliderRouter,
    ):
        reg.register(cls.name, cls)
    return reg
