"""The suite PRM finds the example of a decoded chat prompt whose user turn has several lines (English steps, a
passage question), as the RSD route sees it: SmolLM2's template decoded without its special tokens."""

from __future__ import annotations

from evals.collab_tasks import SuitePRM, check_step
from evals.suites import get_suite


def _decoded_chat(prompt: str) -> str:
    # SmolLM2's chat template with the special tokens dropped (what the collab session's decode gives)
    return ("system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face\nuser\n" + prompt
            + "\nassistant\n")


def test_multi_line_prompts_are_found() -> None:
    prm = SuitePRM("english-steps")
    for ex in get_suite("english-steps").examples("test", 5):
        assert "\n" in ex.prompt
        found = prm.find(_decoded_chat(ex.prompt))
        assert found.prompt == ex.prompt
        first = ex.steps[0]
        assert prm.scorer(_decoded_chat(ex.prompt))([], first) == check_step(ex, [], first) == 1.0
    single = SuitePRM("english")
    passage = next(e for e in get_suite("english").examples("test", 50) if e.meta["category"] == "passage")
    assert single.find(_decoded_chat(passage.prompt)).prompt == passage.prompt
