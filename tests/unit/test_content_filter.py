"""The content policy: words and regexes, prompts and outputs, bad patterns refused at start."""

import pytest

from serve_app.access_errors import ContentFiltered
from serve_app.content_filter import ContentPolicy
from serve_app.settings import Settings


def policy(**kw) -> ContentPolicy:
    return ContentPolicy.from_settings(Settings(**kw))


def test_terms_match_whole_words_case_insensitively():
    p = policy(content_filter_terms="bomb, credit card")
    with pytest.raises(ContentFiltered) as caught:
        p.check_prompt(["how to build a BOMB?"], "prompt")
    assert caught.value.status == 400 and caught.value.type == "content_filter"
    p.check_prompt(["the bombastic speech"], "prompt")
    with pytest.raises(ContentFiltered):
        p.check_prompt(["ok", "my Credit  card".replace("  ", " ")], "messages")


def test_patterns_and_outputs():
    p = policy(content_filter_patterns='["\\\\b\\\\d{3}-\\\\d{2}-\\\\d{4}\\\\b"]', content_filter_output_terms="zebra")
    with pytest.raises(ContentFiltered):
        p.check_prompt(["ssn 123-45-6789"], "prompt")
    p.check_prompt(["zebra"], "prompt")  # output terms do not apply to prompts
    screen = p.output_screen()
    screen("a ze")
    with pytest.raises(ContentFiltered):
        screen("bra!")  # split across chunks, still caught


def test_no_policy_no_screen():
    p = policy()
    p.check_prompt(["anything"], "prompt")
    assert p.output_screen() is None


@pytest.mark.parametrize("value", ['["(unclosed"]', "not json", '{"a": 1}'])
def test_bad_patterns_are_refused(value):
    with pytest.raises(ValueError, match="CONTENT_FILTER_PATTERNS"):
        policy(content_filter_patterns=value)
