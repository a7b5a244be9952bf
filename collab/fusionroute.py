"""FusionRoute: a router model picks an expert per token and adds its own complementary logits to the expert's.

Each step the router model (in process, it must give its last hidden state: ``next_state``) yields logits ``z_R`` and
hidden ``h``; the routing head picks ``I = argmax head(h)``; the next token comes from

    log π_final = log π_router + log π_I        (weights [1, 1] in ``logit_kernels.combine``)

greedy or sampled. A remote expert gives only its top-k: the fusion then runs over the union of the router's and the
expert's top-k (``logit_kernels.combine`` sparse path). Provenance names the chosen expert.

A training file (:func:`save_fusionroute`) holds the head, the expert names in the head's order and the tuned router
model; :meth:`FusionRouteStrategy.from_loaded` builds the strategy from it and a route's roles (``router`` plus one
role per expert), running the tuned router in process (``collab.inproc.HFModel``). What it leaves out: training
(``evals.collab_train.train_fusionroute``) and the disagreement data (``collab.labels.fusion_examples``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from collab.artifact import read_artifact, write_artifact
from collab.inproc import HFModel
from collab.session import Member, Session, topk_of
from collab.strategy import CollabStrategy


class RoutingHead(nn.Module):
    """Linear head from the router's hidden state to one score per expert."""

    def __init__(self, hidden_size: int, n_experts: int):
        super().__init__()
        self.config = {"hidden_size": hidden_size, "n_experts": n_experts}
        self.proj = nn.Linear(hidden_size, n_experts)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden)

    @torch.no_grad()
    def choose(self, hidden: torch.Tensor) -> int:
        return int(torch.argmax(self(hidden.reshape(1, -1))[0]))


def fused_logprobs(router_logits: torch.Tensor, expert_logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax(z_R) + log_softmax(z_I)`` (unnormalised log π_final), the training objective's scores."""
    return torch.log_softmax(router_logits.float(), -1) + torch.log_softmax(expert_logits.float(), -1)


def save_fusionroute(path: str | Path, head: RoutingHead, experts: list[str], router_state: dict[str, Any] | None,
                     *, router_config: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32,
                     **extra: Any) -> None:
    """One file: the head, the expert names (head index order) and the router model's tuned weights (if tuned; stored
    in ``dtype`` to keep the file small) with its transformers config (so the router can be rebuilt from the file)."""
    state = None if router_state is None else {k: v.detach().to(dtype) if v.is_floating_point() else v
                                               for k, v in router_state.items()}
    write_artifact(path, "fusionroute", config=head.config, head=head.state_dict(), experts=experts,
                   router_state=state, router_config=router_config, **extra)


def router_model_from(blob: dict[str, Any]) -> nn.Module | None:
    """The tuned router model saved in a FusionRoute file (float32, eval mode), or None if it holds none."""
    if blob.get("router_state") is None or blob.get("router_config") is None:
        return None
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(blob["router_config"])
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=torch.float32)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["router_state"].items()})
    return model.eval()


def load_fusionroute(path: str | Path, router_model: nn.Module | None = None) -> tuple[RoutingHead, list[str],
                                                                                      dict[str, Any]]:
    """Read a saved head (and load the tuned router weights into ``router_model`` when given and saved)."""
    blob = read_artifact(path, "fusionroute")
    head = RoutingHead(**blob["config"])
    head.load_state_dict(blob["head"])
    if router_model is not None and blob.get("router_state") is not None:
        router_model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                      for k, v in blob["router_state"].items()})
    return head.eval(), list(blob["experts"]), blob


@dataclass
class FusionRouteFile:
    """What a FusionRoute training file gives a strategy: the head, the expert names it scores (in its order), the
    tuned router model in process (None if the file holds none) and the whole saved blob (its metadata)."""

    head: RoutingHead
    experts: list[str]
    router_model: HFModel | None
    blob: dict[str, Any]


def expert_order(saved: list[str], roles: dict[str, str]) -> list[str]:
    """The route's expert members in the head's order: matched by role name (``{a: m1, b: m2}`` with the file's
    experts ``[b, a]`` → ``[m2, m1]``) or by member name; otherwise the roles keep the route's order."""
    if set(saved) <= set(roles):
        return [roles[e] for e in saved]
    if set(saved) <= set(roles.values()):
        return list(saved)
    return list(roles.values())


class FusionRouteStrategy(CollabStrategy):
    """Router model ``router`` (a session member with ``next_state``, a ``collab.protocol.StatefulModel``) + ``head``
    over ``experts`` (member names).

    ``router_model`` (an in-process model with ``next_state``, e.g. the tuned router rebuilt from the training file)
    takes the place of the session's member ``router`` — what a gateway route does, whose members are plain backends."""

    name = "fusionroute"

    def __init__(self, router: str, experts: list[str], head: RoutingHead, *, k: int = 20,
                 router_model: Any = None):
        if head.config["n_experts"] != len(experts):
            raise ValueError(f"head scores {head.config['n_experts']} experts, got {len(experts)} names")
        self.router, self.experts, self.head, self.k = router, list(experts), head.eval(), int(k)
        self.router_model = router_model
        self.choices: list[str] = []

    @classmethod
    def load_artifact(cls, path: str | Path) -> FusionRouteFile:
        """The head, expert names and tuned router of a ``tandem train fusionroute`` file."""
        head, experts, blob = load_fusionroute(path)
        model = router_model_from(blob)
        wrapped = None if model is None else HFModel(str(blob.get("router") or "router"), model=model)
        return FusionRouteFile(head, experts, wrapped, blob)

    @classmethod
    def from_loaded(cls, loaded: FusionRouteFile, **kwargs: Any) -> FusionRouteStrategy:
        """From roles: ``router`` plus one role per expert (ordered by :func:`expert_order`), or ``router`` and
        ``experts`` (member names in the head's order, a list or a comma string); ``k`` as in the constructor. The
        tuned router in the file takes the place of the member ``router``."""
        roles = dict(kwargs)
        router = roles.pop("router")
        params = {k: roles.pop(k) for k in ("k",) if k in roles}
        if "experts" in roles:
            ex = roles.pop("experts")
            experts = [e.strip() for e in ex.split(",")] if isinstance(ex, str) else list(ex)
        else:
            experts = expert_order(loaded.experts, roles)
        return cls(router, experts, loaded.head, router_model=loaded.router_model, **params)

    def prepare(self, session: Session) -> None:
        if self.router_model is not None:
            session.members[self.router] = Member(self.router, self.router_model)
        if not session.member(self.router).has_state:
            raise TypeError(f"router model '{self.router}' must run in process and give hidden states (next_state)")
        for e in self.experts:
            session.member(e)

    async def advance(self, session: Session, budget: int) -> None:
        router_logits, hidden = await session.state(self.router)
        assert hidden is not None
        expert = self.experts[self.head.choose(hidden)]
        self.choices.append(expert)
        m = session.member(expert)
        if m.in_process:
            expert_logits = await session.logits(expert)
            tok = session.pick([torch.log_softmax(router_logits, -1), torch.log_softmax(expert_logits, -1)],
                               [1.0, 1.0])
        else:
            out = await session.complete(expert, 1, top_logprobs=self.k)
            tok = session.pick([topk_of(router_logits, self.k), topk_of(out.steps[0].top)], [1.0, 1.0])
        session.append(tok, expert)
