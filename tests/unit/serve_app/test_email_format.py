import html

from serve_app.email_format import BODY_CLOSE, BODY_OPEN, QUOTE_CLOSE, QUOTE_OPEN, reply_subject, to_email
from serve_app.protocol.email import EmailOptions


def _between(text: str, start: str, end: str) -> str:
    return text[text.index(start) + len(start):text.index(end, text.index(start))]


def test_model_written_script_is_escaped_in_html_and_kept_in_text():
    answer = 'Sure: <script>alert("x")</script> & <b>bold</b>'
    reply = to_email(answer, None)
    assert "<script>" not in reply.html and "<b>" not in reply.html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in reply.html
    assert reply.text == answer
    assert _between(reply.html, BODY_OPEN, BODY_CLOSE) == html.escape(answer)


def test_quoted_original_is_escaped_too_and_subject_gets_one_re():
    options = EmailOptions(subject="RE: Re:  Invoice  <42>", sender="Bob <bob@example.com>",
                           original="Hello,\n\n<script>x</script>", quote_original=True)
    reply = to_email("  Thanks!\n", options)
    assert reply.subject == "Re: Invoice <42>"
    assert reply.text == "Thanks!\n\nBob <bob@example.com> wrote:\n> Hello,\n>\n> <script>x</script>"
    quoted = _between(reply.html, QUOTE_OPEN, QUOTE_CLOSE)
    assert quoted == html.escape("Bob <bob@example.com> wrote:\n> Hello,\n>\n> <script>x</script>")
    assert "<script>" not in reply.html


def test_original_not_quoted_unless_asked_and_subject_from_answer():
    reply = to_email("First line of the answer\nsecond", EmailOptions(original="secret text"))
    assert "secret text" not in reply.text and "secret text" not in reply.html
    assert reply.subject == "First line of the answer"
    assert len(reply_subject(None, "word " * 40)) <= 78
