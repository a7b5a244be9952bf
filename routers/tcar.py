"""TCAR (task-capability agent routing), the pure part: the router prompt, parsing its answer, the embedding
fallback, and the refining prompt.

- :func:`build_prompt` — the messages a reasoning router LLM reads: the agents (id, name, description) and the
  conversation, with the answer format ``<Reason>…</Reason>`` then one to three ``<ID>…</ID>`` (or ``oos``).
- :func:`parse` — the router's text → ``(reason, ids)`` or ``(reason, "oos")``, or ``None`` when nothing usable is
  in it. Lenient where it costs nothing: tags in any case and with spaces inside, a ``<think>`` block before the
  answer, quotes or backticks around ids, ids matched case-insensitively, duplicates dropped, unknown ids dropped,
  at most ``max_ids`` kept (first ones), a missing reason (empty string), an unclosed last ``<ID>``. Known ids win
  over an ``oos`` in the same answer. Strict where guessing would be wrong: no known id and no ``oos`` → ``None``.
- :func:`fallback` — top-k agents by cosine similarity of description embeddings to the query embedding, keeping
  only those at or above a threshold (none → the caller answers out of scope).
- :func:`refine_prompt` — the messages a refining route reads to merge the agents' answers into one reply.

What it leaves out: embedding texts (``routers.embedder``), calling routes, storage of agents, and HTTP
(``gateway.tcar_route``, ``gateway.agents_api``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np

OOS = "oos"
MAX_IDS = 3
# cosine of MiniLM embeddings a description must reach: above where unrelated texts sit (the gateway's TCAR test
# `pytest tests/gateway/test_tcar.py -k fallback` recomputes a choice from real embeddings)
DEFAULT_THRESHOLD = 0.2

SYSTEM_PROMPT = """You are a router. You read a conversation and choose the agents best able to answer its last \
user message. The agents are:

{agents}

Answer in exactly this format and nothing else:
<Reason>one or two sentences on why these agents fit</Reason>
<ID>agent id</ID>
Give one to three <ID> tags, best agent first, using the ids listed above. If no agent fits the request, answer \
<Reason>why none fits</Reason><ID>oos</ID>."""

REFINE_SYSTEM = """You merge answers. Several agents answered the user's last message; their answers follow that \
message. Write one answer to the user's message: keep what is correct and useful in the agents' answers, drop what \
is wrong or repeated, resolve disagreements, and do not mention the agents."""


class AgentLike(Protocol):
    """What the prompt needs of an agent."""

    id: str
    name: str
    description: str


def content_text(content: Any) -> str:
    """A message's content as plain text (OpenAI content parts joined by spaces)."""
    if isinstance(content, list):
        return " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _one_line(s: str) -> str:
    return " ".join(s.split())


def transcript(messages: Sequence[Mapping[str, Any]]) -> str:
    """The conversation as ``role: text`` blocks (tool calls and empty messages left out)."""
    lines = []
    for m in messages:
        text = content_text(m.get("content")).strip()
        if text:
            lines.append(f"{m.get('role', 'user')}: {text}")
    return "\n\n".join(lines)


def build_prompt(agents: Sequence[AgentLike], messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The TCAR router prompt: a system message listing the agents and the format, a user message holding the
    conversation."""
    listing = "\n".join(f"- ID: {a.id} | name: {_one_line(a.name)} | description: {_one_line(a.description)}"
                        for a in agents) or "(no agents)"
    return [
        {"role": "system", "content": SYSTEM_PROMPT.format(agents=listing)},
        {"role": "user", "content": "Conversation:\n\n" + transcript(messages) + "\n\nWhich agents should answer "
                                    "the last user message?"},
    ]


_THINK = re.compile(r"<\s*think\s*>.*?(?:<\s*/\s*think\s*>|$)", re.IGNORECASE | re.DOTALL)
_REASON = re.compile(r"<\s*reason\s*>(.*?)(?:<\s*/\s*reason\s*>|(?=<\s*id\s*>)|$)", re.IGNORECASE | re.DOTALL)
_ID = re.compile(r"<\s*id\s*>(.*?)(?:<\s*/\s*id\s*>|(?=<\s*id\s*>)|$)", re.IGNORECASE | re.DOTALL)
_OOS_WORD = re.compile(r"(?<![A-Za-z0-9_])oos(?![A-Za-z0-9_])", re.IGNORECASE)
_STRIP = " \t\r\n\"'`*.,;:[]()"


def parse(text: str | None, agent_ids: Sequence[str], max_ids: int = MAX_IDS
          ) -> tuple[str, list[str] | Literal["oos"]] | None:
    """The router's decision: ``(reason, ids)`` with 1..max_ids known ids in the router's order (spelled as in
    ``agent_ids``), ``(reason, "oos")``, or ``None`` when the text names no known id and no ``oos``."""
    if not text:
        return None
    body = _THINK.sub("", text)
    m = _REASON.search(body)
    reason = _one_line(m.group(1)) if m else ""
    rest = body[:m.start()] + body[m.end():] if m else body
    known = {a.lower(): a for a in agent_ids}
    ids: list[str] = []
    saw_oos = False
    for raw in _ID.findall(rest):
        token = raw.strip(_STRIP).lower()
        if token == OOS:
            saw_oos = True
        elif token in known and known[token] not in ids:
            ids.append(known[token])
    if ids:
        return reason, ids[:max(1, max_ids)]
    if saw_oos or (not _ID.search(rest) and _OOS_WORD.search(rest)):
        return reason, OOS
    return None


def cosine_scores(query_embedding: np.ndarray, agent_embeddings: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Cosine similarity of the query to each agent's description embedding (zero vectors score 0)."""
    q = np.asarray(query_embedding, dtype=np.float64).ravel()
    qn = float(np.linalg.norm(q))
    out: dict[str, float] = {}
    for agent_id, v in agent_embeddings.items():
        a = np.asarray(v, dtype=np.float64).ravel()
        an = float(np.linalg.norm(a))
        out[agent_id] = float(q @ a / (qn * an)) if qn > 0 and an > 0 else 0.0
    return out


def fallback(query_embedding: np.ndarray, agent_embeddings: Mapping[str, np.ndarray], k: int = MAX_IDS,
             threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """The (at most ``k``) agents most similar to the query, best first, whose similarity is ≥ ``threshold``;
    ties keep the agents' order."""
    scores = cosine_scores(query_embedding, agent_embeddings)
    order = sorted(scores, key=lambda a: -scores[a])  # sorted is stable: ties keep insertion order
    return [a for a in order if scores[a] >= threshold][:max(0, k)]


def refine_prompt(messages: Sequence[Mapping[str, Any]], answers: Sequence[tuple[str, str]]
                  ) -> list[dict[str, Any]]:
    """The refining route's prompt: merge instructions (plus the conversation's own system text), the conversation,
    and the agents' ``(name, answer)`` pairs appended to the last user message (roles keep alternating)."""
    system = REFINE_SYSTEM
    own = [content_text(m.get("content")).strip() for m in messages if m.get("role") in ("system", "developer")]
    if any(own):
        system += "\n\nThe conversation's own instructions:\n" + "\n".join(s for s in own if s)
    convo = [dict(m) for m in messages if m.get("role") not in ("system", "developer")]
    block = "\n\n".join(f"### Answer {i} ({_one_line(name)})\n{text.strip()}"
                        for i, (name, text) in enumerate(answers, 1))
    block = "\n\n---\nAnswers from the agents:\n\n" + (block or "(none)")
    last_user = max((i for i, m in enumerate(convo) if m.get("role") == "user"), default=None)
    if last_user is None:
        convo.append({"role": "user", "content": block.lstrip()})
    else:
        convo[last_user] = {**convo[last_user], "content": content_text(convo[last_user].get("content")) + block}
        convo = convo[:last_user + 1]  # anything after the last user turn is not part of the question
    return [{"role": "system", "content": system}, *convo]
