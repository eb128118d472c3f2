"""The chat page in a real headless Chromium: streamed answers appear rendered from Markdown, model
HTML stays text, hostile Markdown makes no element, link or script the renderer does not allow."""

import json
import re
import time

import pytest

from tests.integration.browser import Browser
from tests.integration.conftest import KEY

# Greedy SmolLM2 answers this with a fenced HTML snippet (```html\n<h1>Hello</h1>\n```).
HTML_PROMPT = "Write an HTML bold tag around the word hello."


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


# What an answer may hold: the tags and attributes markdown.js makes, nothing else.
ALLOWED_TAGS = {"P", "BR", "H1", "H2", "H3", "H4", "H5", "H6", "STRONG", "EM", "CODE", "PRE", "UL", "OL", "LI",
                "BLOCKQUOTE", "A", "HR"}
ALLOWED_ATTRIBUTES = {"href", "rel", "target", "start", "data-language"}


def _last_answer(browser) -> dict:
    return browser.js("""(() => {
        const all = document.querySelectorAll('#log .msg.assistant');
        const div = all[all.length - 1];
        return div ? {text: div.textContent, state: div.dataset.state || '', chunks: Number(div.dataset.chunks || 0),
                      tags: [...div.querySelectorAll('*')].map((e) => e.tagName)} : null;
    })()""")


# Everything under #log that a rendered answer must not hold: elements, attributes and links the
# renderer does not make. Returns a list of offences (empty when the log is clean).
OFFENCES = """(() => {
    const tags = new Set(%s), attributes = new Set(%s), found = [];
    for (const e of document.querySelectorAll('#log .msg *')) {
        if (!tags.has(e.tagName)) found.push('element ' + e.outerHTML);
        for (const a of e.getAttributeNames()) if (!attributes.has(a)) found.push('attribute ' + a);
        if (e.tagName === 'A') {
            const href = e.getAttribute('href') || '';
            if (!/^(https?:|mailto:)/.test(href)) found.push('href ' + href);
            if (e.rel !== 'noopener noreferrer' || e.target !== '_blank') found.push('link ' + e.outerHTML);
        }
    }
    return found;
})()""" % (json.dumps(sorted(ALLOWED_TAGS)), json.dumps(sorted(ALLOWED_ATTRIBUTES)))


# Records, inside the page, the answer's text at every DOM change while it streams: polling from
# here could miss a short answer's partial states, a MutationObserver sees each token event's update.
WATCH_PARTIALS = """(() => {
    if (window.__watch) window.__watch.disconnect();
    window.__partials = [];
    window.__watch = new MutationObserver(() => {
        const all = document.querySelectorAll('#log .msg.assistant');
        const div = all[all.length - 1];
        if (div && div.dataset.state === 'streaming' && div.textContent) window.__partials.push(div.textContent);
    });
    window.__watch.observe(document.getElementById('log'),
                           {subtree: true, childList: true, characterData: true, attributes: true});
    return true;
})()"""


def _send(browser, text: str) -> dict:
    browser.js(WATCH_PARTIALS)
    browser.js(f"document.getElementById('message').value = {json.dumps(text)};"
               "document.getElementById('send').click(); true")
    for _ in range(3000):  # bounded polling until the answer is complete
        answer = _last_answer(browser)
        if answer and answer["state"] in ("done", "error"):
            partials = browser.js("window.__partials")
            return {"final": answer, "partial": {"text": partials[0]} if partials else None}
        time.sleep(0.05)
    raise AssertionError(f"no answer; last state {answer}")


def test_chat_page_streams_an_answer_and_shows_model_html_as_text(base_url, browser):
    browser.open(base_url + "/")
    assert browser.js("document.getElementById('status').textContent") == "not connected"
    browser.js(f"""(() => {{
        const key = document.getElementById('api-key');
        key.value = {json.dumps(KEY)};
        key.dispatchEvent(new Event('change'));
        document.getElementById('temperature').value = '0';
        document.getElementById('max-tokens').value = '60';
        return true;
    }})()""")

    first = _send(browser, HTML_PROMPT)
    final, partial = first["final"], first["partial"]
    assert final["state"] == "done", final
    # streamed: text was on screen before the answer was complete, over several token events
    assert partial is not None and len(partial["text"]) < len(final["text"])
    assert final["chunks"] >= 2
    # the model wrote markup; it is shown as characters, never turned into its elements
    assert re.search(r"<[a-zA-Z/]", final["text"]), final["text"]
    assert set(final["tags"]) <= ALLOWED_TAGS, final["tags"]
    assert browser.js(OFFENCES) == []
    # the answer on screen is the renderer's output for the answer kept in the conversation
    assert browser.js("""(() => {
        const all = document.querySelectorAll('#log .msg.assistant'), div = all[all.length - 1];
        const again = document.createElement('div');
        again.append(AICoreMarkdown.render(JSON.parse(localStorage.getItem('aicore.history'))[1].content));
        return div.childNodes.length === again.childNodes.length &&
               [...div.childNodes].every((node, i) => node.isEqualNode(again.childNodes[i]));
    })()""")
    assert browser.js("document.getElementById('model').value") == "smollm2-135m-instruct"

    # the conversation is kept: a follow-up, then a reload shows all four messages again
    second = _send(browser, "Thank you.")
    assert second["final"]["state"] == "done"
    assert browser.js("document.querySelectorAll('#log .msg').length") == 4
    # the key lives in this tab's sessionStorage only, never in localStorage
    assert browser.js("sessionStorage.getItem('aicore.key')") == KEY
    assert browser.js("localStorage.getItem('aicore.key')") is None
    history = browser.js("JSON.parse(localStorage.getItem('aicore.history'))")
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert re.search(r"<[a-zA-Z/]", history[1]["content"])  # kept as the model wrote it, Markdown and all
    browser.open(base_url + "/")
    assert browser.js("document.querySelectorAll('#log .msg').length") == 4
    assert browser.js("document.querySelectorAll('#log .msg')[1].textContent") == final["text"]  # rendered again
    assert browser.js("document.getElementById('api-key').value") == KEY  # same tab: still there


def test_chat_page_reports_a_wrong_key(base_url, browser):
    browser.open(base_url + "/")
    browser.js("localStorage.clear(); true")
    browser.js("""(() => {
        const key = document.getElementById('api-key');
        key.value = 'not-a-key';
        key.dispatchEvent(new Event('change'));
        document.getElementById('message').value = 'hello';
        document.getElementById('send').click();
        return true;
    })()""")
    for _ in range(600):
        status = browser.js("document.getElementById('status').textContent")
        if status.startswith("error"):
            break
        time.sleep(0.05)
    assert status == "error: invalid API key"
    assert browser.js("document.querySelectorAll('#log .msg').length") == 0


# Model output written to attack the page: raw HTML with handlers, script URLs in every spelling,
# HTML in a code block, a remote image. Each piece sets window.__pwned if it ever runs.
HOSTILE = [
    '<img src=x onerror="window.__pwned=1">',
    "[click](javascript:window.__pwned=1)",
    "[upper](JaVaScRiPt:window.__pwned=1)",
    "[tab](java\tscript:window.__pwned=1)",
    "[data](data:text/html,<script>window.__pwned=1</script>)",
    "[relative](/api/v1/keys) [vb](vbscript:msgbox(1))",
    "![pic](javascript:window.__pwned=1)",
    "```html\n<script>window.__pwned=1</script>\n```",
    '<svg onload="window.__pwned=1"><a href="javascript:window.__pwned=1">svg link</a></svg>',
    '**<b>x</b>** <iframe src="javascript:window.__pwned=1"></iframe>',
    '<a href="javascript:window.__pwned=1" onclick="window.__pwned=1">raw link</a>',
    "<javascript:window.__pwned=1> <https://example.com/ok>",
    "![remote](https://example.com/tracker.png)",
]
HOSTILE_TEXT = "\n\n".join(HOSTILE)
# Shown literally: what the renderer must keep as characters.
LITERAL = ['<img src=x onerror="window.__pwned=1">', "[click](javascript:window.__pwned=1)",
           "[upper](JaVaScRiPt:window.__pwned=1)", "[data](data:text/html,<script>window.__pwned=1</script>)",
           "[relative](/api/v1/keys)", "![pic](javascript:window.__pwned=1)", '<svg onload="window.__pwned=1">',
           '<iframe src="javascript:window.__pwned=1"></iframe>', "<javascript:window.__pwned=1>"]

# Feeds `text` to the page as a streamed answer, `size` characters per token event, through the
# page's own handlers; after every event records the offences found in the log.
STREAM = """(async () => {
    const id = 'hostile', div = bubble('assistant', ''), offences = [];
    div.dataset.state = 'streaming';
    pending.set(id, {div, text: ''});
    for (let i = 0; i < %(text)s.length; i += %(size)d) {
        onMessage({type: 'token', id, text: %(text)s.slice(i, i + %(size)d)});
        offences.push(...%(check)s);
    }
    onMessage({type: 'done', id, response: %(text)s, model: 'm', usage: {total_tokens: 1}, processing_time: 0});
    offences.push(...%(check)s);
    // a frame and a task later: any handler or loaded URL would have run by now
    await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
    return {offences, pwned: window.__pwned === undefined ? null : window.__pwned, state: div.dataset.state};
})()"""


def _stream(browser, text: str, size: int) -> dict:
    return browser.js(STREAM % {"text": json.dumps(text), "size": size, "check": OFFENCES})


def _fresh_page(browser, base_url):
    browser.open(base_url + "/")
    browser.js("localStorage.clear(); document.getElementById('log').replaceChildren(); true")


def test_hostile_markdown_runs_nothing_and_makes_only_safe_elements(base_url, browser):
    _fresh_page(browser, base_url)
    # streamed a few characters at a time (every half-written tag and link on the way), then whole
    for size in (3, len(HOSTILE_TEXT)):
        result = _stream(browser, HOSTILE_TEXT, size)
        assert result == {"offences": [], "pwned": None, "state": "done"}, result
    answer = browser.js("""(() => {
        const div = [...document.querySelectorAll('#log .msg.assistant')].pop();
        return {text: div.textContent, code: [...div.querySelectorAll('pre > code')].map((c) => c.textContent),
                strong: [...div.querySelectorAll('strong')].map((s) => s.textContent),
                links: [...div.querySelectorAll('a')].map((a) => [a.textContent, a.getAttribute('href')])};
    })()""")
    for literal in LITERAL:
        assert literal in answer["text"], literal
    assert answer["code"] == ["<script>window.__pwned=1</script>"]
    assert answer["strong"] == ["<b>x</b>"]
    # the only links: the autolink and the remote image, which is a link to it and loads nothing
    assert answer["links"] == [["https://example.com/ok", "https://example.com/ok"],
                               ["remote", "https://example.com/tracker.png"]]
    # the reload renders the kept conversation through the same renderer: still clean
    browser.open(base_url + "/")
    assert browser.js("document.querySelectorAll('#log .msg.assistant').length") == 2
    assert browser.js(OFFENCES) == []
    assert browser.js("window.__pwned === undefined")


def test_the_page_refuses_html_from_strings_and_inline_script(base_url, browser):
    _fresh_page(browser, base_url)
    # Trusted Types: an innerHTML assignment throws on this page (any future slip fails loudly)
    assert browser.js("""(() => {
        try { document.createElement('div').innerHTML = '<b>x</b>'; return 'assigned'; }
        catch (e) { return e.name; }
    })()""") == "TypeError"
    # no inline script: a <script> with a body, added by DOM calls, does not run
    browser.js("""(() => {
        const s = document.createElement('script');
        s.append('window.__pwned = 1');
        document.body.append(s);
        return true;
    })()""")
    assert browser.js("window.__pwned === undefined")


def test_markdown_structure_renders(base_url, browser):
    _fresh_page(browser, base_url)
    markdown = ("## Steps\n\nSome **bold**, *italic* and `x < y` text\nnext line.\n\n"
                "- first\n- second\n  - nested\n\n1. one\n2. two\n\n> a quote\n\n---\n\n"
                "```python\nprint('<b>hi</b>')\n```\n\nSee [docs](https://example.com/docs) or https://example.org.")
    result = _stream(browser, markdown, 4)
    assert result == {"offences": [], "pwned": None, "state": "done"}, result
    shape = browser.js("""(() => {
        const div = [...document.querySelectorAll('#log .msg.assistant')].pop();
        const texts = (selector) => [...div.querySelectorAll(selector)].map((e) => e.textContent);
        return {h2: texts('h2'), strong: texts('p strong'), em: texts('p em'), code: texts('p code'),
                br: div.querySelectorAll('p br').length, items: texts('ul > li'), nested: texts('ul ul > li'),
                ordered: texts('ol > li'), quote: texts('blockquote p'), hr: div.querySelectorAll('hr').length,
                pre: texts('pre > code'), language: div.querySelector('pre > code').dataset.language,
                links: [...div.querySelectorAll('a')].map((a) => [a.textContent, a.href, a.rel, a.target])};
    })()""")
    assert shape == {
        "h2": ["Steps"], "strong": ["bold"], "em": ["italic"], "code": ["x < y"], "br": 1,
        "items": ["first", "secondnested", "nested"], "nested": ["nested"], "ordered": ["one", "two"],
        "quote": ["a quote"], "hr": 1, "pre": ["print('<b>hi</b>')"], "language": "python",
        "links": [["docs", "https://example.com/docs", "noopener noreferrer", "_blank"],
                  ["https://example.org", "https://example.org/", "noopener noreferrer", "_blank"]],
    }
    # half-way through a fence the code is already a code block (streaming shows it as it comes)
    _stream(browser, "Code:\n\n```js\nlet a = '<i>';", 100)
    assert browser.js("[...document.querySelectorAll('#log pre > code')].pop().textContent") == "let a = '<i>';"
