"""The chat page in a real headless Chromium: streamed text appears, model HTML stays text."""

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


def _last_answer(browser) -> dict:
    return browser.js("""(() => {
        const all = document.querySelectorAll('#log .msg.assistant');
        const div = all[all.length - 1];
        return div ? {text: div.textContent, state: div.dataset.state || '', chunks: Number(div.dataset.chunks || 0),
                      elements: div.childElementCount} : null;
    })()""")


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
    # the model wrote markup; it is shown as characters, not turned into elements
    assert re.search(r"<[a-zA-Z/]", final["text"]), final["text"]
    assert final["elements"] == 0
    assert browser.js("document.querySelectorAll('#log *:not(.msg)').length") == 0
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
    assert history[1]["content"] == final["text"]
    browser.open(base_url + "/")
    assert browser.js("document.querySelectorAll('#log .msg').length") == 4
    assert browser.js("document.querySelectorAll('#log .msg')[1].textContent") == final["text"]
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
