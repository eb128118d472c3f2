"""Response cache and chat sessions on a real Redis, two ingress replicas, the real SmolLM2."""

import contextlib
import json
import time

import httpx
import pytest
from websockets.sync.client import connect

from scripts.serve_process import ROOT, ServeProcess
from tests.integration.redis_process import RedisProcess
from tests.integration.sse import parse_sse

MODEL = "smollm2-135m-instruct"
K1, K2 = "cache-key-1-0123456789", "cache-key-2-0123456789"
CACHE_TTL_S = 8


@pytest.fixture(scope="module")
def redis_server():
    process = RedisProcess().start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def app(redis_server, tmp_path_factory):
    models = json.loads((ROOT / "models.json").read_text())
    entry = {**models["models"][MODEL], "context_length": 512, "default_max_tokens": 16}
    path = tmp_path_factory.mktemp("cfg") / "models.json"
    path.write_text(json.dumps({"models": {MODEL: entry}}))
    env = {"API_KEYS": f"{K1},{K2}", "REDIS_URL": redis_server.url, "INGRESS_REPLICAS": "2",
           "CACHE_TTL_S": str(CACHE_TTL_S), "LOG_FORMAT": "json", "READY_REQUIRES_REDIS": "true"}
    server = ServeProcess(env=env, args={"model_config_path": str(path)}).start(ready_models=(MODEL,))
    yield server
    server.stop()


def post(app, path, body, key=K1, **headers):
    # A new connection per call: requests spread over both ingress replicas.
    return httpx.post(app.base_url + path, json=body, headers={"X-API-Key": key, **headers}, timeout=120)


def served(app) -> int:
    models = httpx.get(app.base_url + "/api/v1/models", headers={"X-API-Key": K1}, timeout=60).json()["models"]
    return models[0]["served"]


BASE = {"prompt": "Three facts about owls:", "max_tokens": 6, "temperature": 0}


def test_hit_after_miss_costs_no_model_compute(app):
    body = {**BASE, "prompt": "Tell me about the moon."}
    first = post(app, "/api/v1/generate", body)
    assert first.headers["x-cache"] == "MISS" and first.json()["cached"] is False
    before = served(app)
    second = post(app, "/api/v1/generate", body)
    assert second.headers["x-cache"] == "HIT" and second.json()["cached"] is True
    assert second.json()["response"] == first.json()["response"]
    assert second.json()["tokens_used"] == first.json()["tokens_used"]  # still counts as usage
    assert served(app) == before


@pytest.mark.parametrize("change", [
    {"max_tokens": 7}, {"top_p": 0.5}, {"top_k": 5}, {"stop": ["zzz"]}, {"seed": 3},
    {"repeat_penalty": 1.3}, {"presence_penalty": 0.5}, {"frequency_penalty": 0.5}, {"prompt": "Three facts about cats:"},
])
def test_any_single_parameter_change_misses(app, change):
    post(app, "/api/v1/generate", BASE)
    assert post(app, "/api/v1/generate", BASE).headers["x-cache"] == "HIT"
    assert post(app, "/api/v1/generate", {**BASE, **change}).headers["x-cache"] == "MISS"


def test_endpoint_is_part_of_the_key(app):
    post(app, "/api/v1/generate", BASE)
    r = post(app, "/v1/completions", BASE)
    assert r.headers["x-cache"] == "MISS" and r.json()["object"] == "text_completion"


def test_entries_expire_after_the_ttl(app):
    body = {**BASE, "prompt": "Expiring question?"}
    post(app, "/api/v1/generate", body)
    assert post(app, "/api/v1/generate", body).headers["x-cache"] == "HIT"
    time.sleep(CACHE_TTL_S + 1)
    assert post(app, "/api/v1/generate", body).headers["x-cache"] == "MISS"


def test_streamed_replay_is_a_valid_sse_stream(app):
    body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "temperature": 0}
    plain = post(app, "/v1/chat/completions", body).json()["choices"][0]["message"]["content"]
    r = post(app, "/v1/chat/completions", {**body, "stream": True})
    assert r.headers["x-cache"] == "HIT" and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == plain
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    api = post(app, "/api/v1/chat", {**body, "stream": True})
    assert api.headers["x-cache"] == "MISS"  # a different endpoint
    replay = parse_sse(post(app, "/api/v1/chat", {**body, "stream": True}).text)
    assert replay[-1]["done"] is True and replay[-1]["cached"] is True


def test_sampled_requests_are_not_cached_unless_asked(app):
    body = {"prompt": "Random thought:", "max_tokens": 4, "temperature": 0.9}
    before = served(app)
    for _ in range(2):
        assert "x-cache" not in post(app, "/api/v1/generate", body).headers
    assert served(app) == before + 2
    opted = {**body, "cache": True}
    assert post(app, "/api/v1/generate", opted).headers["x-cache"] == "MISS"
    assert post(app, "/api/v1/generate", opted).headers["x-cache"] == "HIT"
    assert "x-cache" not in post(app, "/api/v1/generate", {**BASE, "cache": False}).headers
    assert "x-cache" not in post(app, "/api/v1/generate", BASE, **{"Cache-Control": "no-cache"}).headers


def test_cache_entries_are_per_key(app):
    body = {**BASE, "prompt": "Per-key question."}
    post(app, "/api/v1/generate", body, key=K1)
    assert post(app, "/api/v1/generate", body, key=K1).headers["x-cache"] == "HIT"
    assert post(app, "/api/v1/generate", body, key=K2).headers["x-cache"] == "MISS"


def _ingress_pid(app, request_id: str):
    for _ in range(50):
        for line in app.log().splitlines():
            if request_id in line and '"aicore.access"' in line and "ingress pid=" in line:
                return line.split("ingress pid=")[1].split(")")[0]
        time.sleep(0.2)
    return None


def _busy_stream(app):
    """A streamed completion held open while the next request is sent: that request then finds
    one ingress replica busy, and both Serve's proxy (fewest ongoing requests of two) and HAProxy
    (`leastconn`) send it to the other. Without it HAProxy, which reuses its backend connection,
    sends sequential requests to one replica."""
    body = {"model": MODEL, "prompt": "Count slowly:", "max_tokens": 200, "stream": True, "ignore_eos": True}
    return httpx.stream("POST", app.base_url + "/v1/completions", json=body, headers={"X-API-Key": K1}, timeout=120)


def test_session_continues_across_ingress_replicas_and_is_private(app):
    pids = set()
    turns = ["My name is Alice.", "What is my name?", "Thanks.", "Bye.", "One more.", "Last one."]
    # Used only until both replicas have answered: Serve's proxy picks a replica at random, and
    # ten turns once all reached one of them. Sixteen turns stay well inside the 512-token context.
    turns += [f"Extra turn {n}." for n in range(1, 11)]
    sent = 0
    for i, text in enumerate(turns, start=1):
        if i > 6 and len(pids - {None}) == 2:
            break  # with Serve's proxy the busy replica is random: six turns usually reach both
        sent = i
        with contextlib.ExitStack() as stack:
            if i % 2 == 0:  # every other turn beside a busy replica (closing the stream cancels it)
                busy = stack.enter_context(_busy_stream(app))
                assert busy.status_code == 200 and next(line for line in busy.iter_lines() if line)  # streaming
            r = post(app, "/api/v1/chat", {"session_id": "s-alice", "messages": [{"role": "user", "content": text}],
                                            "max_tokens": 8})
        assert r.status_code == 200 and r.json()["session_id"] == "s-alice"
        pids.add(_ingress_pid(app, r.headers["x-request-id"]))
        history = httpx.get(app.base_url + "/api/v1/sessions/s-alice", headers={"X-API-Key": K1}).json()
        assert [m["content"] for m in history["messages"][::2]] == turns[:i]  # every user turn, in order
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"] * i
    assert len(pids - {None}) == 2, pids  # both ingress replicas served turns of one session
    other = httpx.get(app.base_url + "/api/v1/sessions/s-alice", headers={"X-API-Key": K2})
    assert other.status_code == 404
    assert httpx.get(app.base_url + "/api/v1/sessions", headers={"X-API-Key": K2}).json()["sessions"] == []
    mine = httpx.get(app.base_url + "/api/v1/sessions", headers={"X-API-Key": K1}).json()["sessions"]
    assert [s["session_id"] for s in mine] == ["s-alice"] and mine[0]["messages"] == 2 * sent
    assert httpx.delete(app.base_url + "/api/v1/sessions/s-alice", headers={"X-API-Key": K2}).status_code == 404
    assert httpx.delete(app.base_url + "/api/v1/sessions/s-alice", headers={"X-API-Key": K1}).status_code == 200
    assert httpx.get(app.base_url + "/api/v1/sessions/s-alice", headers={"X-API-Key": K1}).status_code == 404


def test_a_batch_chat_item_continues_its_session_as_api_v1_chat_does(app):
    def item(text: str) -> dict:
        return {"id": "turn", "type": "chat", "session_id": "s-batch", "max_tokens": 6, "temperature": 0,
                "messages": [{"role": "user", "content": text}]}

    answers = []
    for text in ("My name is Bob.", "What is my name?"):
        r = post(app, "/api/v1/generate/batch", {"items": [item(text)]})
        result = r.json()["results"][0]
        assert result["status"] == "ok" and result["result"]["session_id"] == "s-batch", r.text
        answers.append(result["result"]["response"])
    history = httpx.get(app.base_url + "/api/v1/sessions/s-batch", headers={"X-API-Key": K1}).json()["messages"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "My name is Bob."), ("assistant", answers[0]), ("user", "What is my name?"), ("assistant", answers[1])]


def test_session_trimming_keeps_the_system_prompt(app):
    system = {"role": "system", "content": "You are a terse assistant."}
    long_turn = "Here is a long remark about the weather and the sea. " * 12  # ~130 tokens
    first = post(app, "/v1/chat/completions", {"session_id": "s-trim", "max_tokens": 8,
                                              "messages": [system, {"role": "user", "content": long_turn}]})
    assert first.status_code == 200
    for i in range(5):  # far past the 512-token context in total
        r = post(app, "/v1/chat/completions", {"session_id": "s-trim", "max_tokens": 8,
                                              "messages": [{"role": "user", "content": f"{i}: {long_turn}"}]})
        assert r.status_code == 200, r.text
    messages = httpx.get(app.base_url + "/api/v1/sessions/s-trim", headers={"X-API-Key": K1}).json()["messages"]
    assert messages[0] == system
    assert messages[-2]["content"].startswith("4: ") and messages[-1]["role"] == "assistant"
    assert len(messages) < 1 + 2 * 6  # older turns were dropped


def test_a_second_turn_while_one_runs_is_refused_and_the_first_is_stored(app):
    def turn(text, **extra):
        return {"session_id": "s-busy", "messages": [{"role": "user", "content": text}], **extra}

    long = turn("Count from one to five hundred.", max_tokens=400, ignore_eos=True, stream=True)
    with httpx.stream("POST", app.base_url + "/api/v1/chat", json=long, headers={"X-API-Key": K1},
                      timeout=120) as first:
        lines = first.iter_lines()  # kept: a dropped iterator closes the response, and the turn with it
        assert first.status_code == 200 and next(line for line in lines if line)  # under way
        second = post(app, "/v1/chat/completions", turn("Meanwhile.", max_tokens=4))
        assert second.status_code == 409, second.text
        assert second.json()["error"]["code"] == "session_busy" and second.json()["error"]["param"] == "session_id"
        events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        assert events[-1]["done"] is True  # read to its end: the turn is saved
    history = httpx.get(app.base_url + "/api/v1/sessions/s-busy", headers={"X-API-Key": K1}).json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"] and history[0]["content"].startswith("Count")
    after = post(app, "/api/v1/chat", turn("After.", max_tokens=4))  # the lease went with the first turn
    assert after.status_code == 200, after.text
    history = httpx.get(app.base_url + "/api/v1/sessions/s-busy", headers={"X-API-Key": K1}).json()["messages"]
    assert [m["content"] for m in history[::2]] == ["Count from one to five hundred.", "After."]


def _ws_outcomes(ws, ids) -> dict:
    """Each request id's end: its `done` message, or its error's code."""
    ends = {}
    while len(ends) < len(ids):
        message = json.loads(ws.recv())
        if message["type"] == "done":
            ends[message["id"]] = message
        elif message["type"] == "error":
            ends[message["id"]] = message["error"]["code"]
    return ends


def test_websocket_chat_turns_keep_a_session(app):
    def chat(request_id, text, **extra):
        return json.dumps({"type": "chat", "id": request_id, "session_id": "s-ws", "max_tokens": 8,
                           "messages": [{"role": "user", "content": text}], **extra})

    def user_turns():
        history = httpx.get(app.base_url + "/api/v1/sessions/s-ws", headers={"X-API-Key": K1}).json()
        return [m["content"] for m in history["messages"] if m["role"] == "user"]

    url = app.base_url.replace("http://", "ws://", 1) + "/api/v1/ws"
    with connect(url, additional_headers={"X-API-Key": K1}) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        for request_id, text in (("t1", "My name is Bob."), ("t2", "What is my name?")):
            ws.send(chat(request_id, text))
            assert _ws_outcomes(ws, [request_id])[request_id]["type"] == "done"
        assert user_turns() == ["My name is Bob.", "What is my name?"]
        r = post(app, "/api/v1/chat", {"session_id": "s-ws", "max_tokens": 4,
                                       "messages": [{"role": "user", "content": "Over HTTP."}]})
        assert r.status_code == 200 and user_turns()[-1] == "Over HTTP."  # one session, whatever the channel
        ws.send(chat("a", "Turn A.", max_tokens=64, ignore_eos=True))  # two turns of it at once
        ws.send(chat("b", "Turn B.", max_tokens=64, ignore_eos=True))
        ends = _ws_outcomes(ws, ["a", "b"])
    answered = [f"Turn {i.upper()}." for i in ("a", "b") if isinstance(ends[i], dict)]
    assert answered and all(isinstance(e, dict) or e == "session_busy" for e in ends.values()), ends
    assert sorted(user_turns()[3:]) == answered  # each answered turn stored, none lost, none refused stored
    assert post(app, "/api/v1/chat", {"session_id": "s-ws", "messages": [{"role": "user", "content": "hi"}],
                                      "max_tokens": 2}, key=K2).status_code == 200
    assert user_turns()[-1] != "hi"  # another key's session of the same name is its own


def test_redis_outage_degrades_and_recovers_without_restart(app, redis_server):
    redis_server.stop()
    try:
        r = post(app, "/api/v1/generate", {**BASE, "prompt": "During the outage."})
        assert r.status_code == 200 and r.json()["response"]  # generation keeps working, uncached
        s = post(app, "/api/v1/chat", {"session_id": "s-down", "messages": [{"role": "user", "content": "hi"}]})
        assert s.status_code == 503 and s.json()["error"]["code"] == "store_unavailable"
        listing = httpx.get(app.base_url + "/api/v1/sessions", headers={"X-API-Key": K1})
        assert listing.status_code == 503
        ready = httpx.get(app.base_url + "/api/v1/health/ready")  # READY_REQUIRES_REDIS=true
        assert ready.status_code == 503 and ready.json()["redis"] == "down"
        assert "Redis is unreachable" in ready.json()["reasons"]
    finally:
        redis_server.start()
    for _ in range(100):  # recovers on its own once Redis answers again
        s = post(app, "/api/v1/chat", {"session_id": "s-down", "messages": [{"role": "user", "content": "hi"}],
                                        "max_tokens": 4})
        if s.status_code == 200:
            break
        time.sleep(0.3)
    assert s.status_code == 200
    ready = httpx.get(app.base_url + "/api/v1/health/ready")
    assert ready.status_code == 200 and ready.json()["redis"] == "ok"
    hit = False
    for attempt in range(10):  # the cache works again too (each ingress replica reconnects on its own)
        body = {**BASE, "prompt": f"After the outage, question {attempt}."}
        post(app, "/api/v1/generate", body)
        hit = post(app, "/api/v1/generate", body).headers["x-cache"] == "HIT"
        if hit:
            break
    assert hit
    for _ in range(50):  # metrics from both replicas arrive within METRICS_FLUSH_S
        text = httpx.get(app.base_url + "/api/v1/metrics", headers={"X-API-Key": K1}).text
        hits = _value(text, 'aicore_cache_requests_total{model="%s",result="hit"}' % MODEL)
        if _value(text, "aicore_store_errors_total") > 0 and hits > 0:
            break
        time.sleep(0.2)
    assert _value(text, "aicore_store_errors_total") > 0
    assert _value(text, 'aicore_cache_requests_total{model="%s",result="hit"}' % MODEL) > 0
    assert _value(text, "aicore_cache_written_bytes_total") > 0
    assert _value(text, "aicore_sessions_active") >= 1  # s-down, stored after the recovery


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
