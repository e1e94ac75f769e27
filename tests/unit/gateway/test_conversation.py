"""What a follow-up is searched for: the LLM's rewrite only when it is a standalone question."""

from __future__ import annotations

import pytest

from gateway.conversation import _rewrite_usable, history_question

pytestmark = pytest.mark.unit

EARLIER = ["What is a migraine?", "A migraine is a headache disorder with attacks of throbbing pain."]


@pytest.mark.parametrize(
    "reply",
    [
        "A migraine is a headache disorder with attacks of throbbing pain.",  # the assistant turn repeated
        "The user asked about asthma, and the response provided was about triggers.",  # a summary, no question
        "user: No, it can't. High blood pressure is a normal part of the human body.",  # an answer with a role
        "user: How is a migraine treated?",
        "How is a migraine treated?\nIt is treated with painkillers.",
        "",
    ],
)
def test_replies_of_a_small_model_that_are_not_a_rewrite_are_refused(reply: str) -> None:
    # The first three are what SmolLM2-135M answered when asked to rewrite (see README, Conversations).
    assert _rewrite_usable(reply, "How is it treated?", EARLIER) is None


def test_a_standalone_question_is_kept_and_the_fallback_joins_the_user_turns() -> None:
    assert _rewrite_usable('Standalone question: "How is a migraine treated?"', "How is it treated?", EARLIER) == (
        "How is a migraine treated?"
    )
    turns = ["What is a migraine?", "How is it treated?"]
    assert history_question(turns) == "What is a migraine? How is it treated?"
    assert history_question(["a", "b", "c", "d"]) == "b c d"  # the last three turns, the question last
