"""The content policy: words and regexes, prompts and outputs, bad patterns refused at start."""

import pytest

from core.errors import ContentFiltered
from core.settings import Settings
from serve_app.access.content_filter import ContentPolicy


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
    sent = screen.feed("a ze")
    with pytest.raises(ContentFiltered):
        sent += screen.feed("bra!")  # split across chunks, still caught
    assert "z" not in sent  # and no part of it went out before


def _stream(screen, pieces) -> tuple[str, bool]:
    """What a client would have received, and whether the stream was cut by the policy."""
    sent = ""
    try:
        for piece in pieces:
            sent += screen.feed(piece)
        sent += screen.finish()
    except ContentFiltered:
        return sent, True
    return sent, False


@pytest.mark.parametrize("split", range(1, 12))
def test_no_part_of_a_term_is_sent_wherever_the_stream_splits(split):
    p = policy(content_filter_output_terms="zebra, credit card")
    for text in ('The word "zebra" is a noun.', "my credit card number", "ZEBRA"):
        pieces = [text[i:i + split] for i in range(0, len(text), split)]
        sent, cut = _stream(p.output_screen(), pieces)
        assert cut, (text, split)
        start = text.lower().index("zebra" if "zebra" in text.lower() else "credit card")
        assert text[:start].startswith(sent), (text, split, sent)  # nothing of the term went out
        assert len(sent) >= start - p.holdback - split, (text, split, sent)  # the rest flowed as it came


@pytest.mark.parametrize("split", range(1, 8))
def test_clean_text_arrives_whole_and_in_order(split):
    p = policy(content_filter_output_terms="zebra", content_filter_output_patterns='["secret-\\\\d{4}"]',
               content_filter_holdback_chars=10)
    text = "zebras and a zebrafish; the secret-12 is out; ze"  # near misses only
    pieces = [text[i:i + split] for i in range(0, len(text), split)]
    screen = p.output_screen()
    released = [screen.feed(piece) for piece in pieces]
    assert "".join(released) == text[:-10]  # text flows as it comes, held back by the holdback only
    assert "".join(released) + screen.finish() == text


def test_a_match_at_the_end_waits_for_the_next_piece():
    p = policy(content_filter_output_terms="zebra")
    screen = p.output_screen()
    assert screen.feed("a zebra") == "a "  # "zebra" may yet become "zebras": neither sent nor refused
    assert screen.feed("s run") == "zebra"  # now it is another word: out, less the holdback
    assert screen.finish() == "s run"
    screen = p.output_screen()
    screen.feed("a zebra")
    with pytest.raises(ContentFiltered):
        screen.finish()  # the text ended on the term


def test_patterns_hold_back_their_configured_length():
    p = policy(content_filter_output_patterns='["secret-\\\\d{4}"]', content_filter_holdback_chars=20)
    assert p.holdback == 20
    sent, cut = _stream(p.output_screen(), ["x" * 30, " secret-", "12", "34 more"])
    assert cut and sent == "x" * 20  # what was more than 20 characters behind the newest text


def test_no_policy_no_screen():
    p = policy()
    p.check_prompt(["anything"], "prompt")
    assert p.output_screen() is None


@pytest.mark.parametrize("value", ['["(unclosed"]', "not json", '{"a": 1}'])
def test_bad_patterns_are_refused(value):
    with pytest.raises(ValueError, match="CONTENT_FILTER_PATTERNS"):
        policy(content_filter_patterns=value)
