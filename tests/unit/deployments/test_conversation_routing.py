"""The GGUF models' request router (deployments/routing.py): its affinity key, the rendezvous choice,
and its ranks driven through Ray Serve's own routing loop with stand-in replicas (the integration
test tests/integration/test_conversation_routing.py proves it on a real two-replica app)."""

import asyncio
import random
from collections import Counter

import pytest
from ray.exceptions import ActorDiedError
from ray.serve._private.common import DeploymentHandleSource, DeploymentID, ReplicaID, RequestMetadata
from ray.serve.request_router import PendingRequest

from core.types import GenerationRequest, SamplingParams
from deployments.routing import PROMPT_START_CHARS, ConversationRouter, affinity_key, rendezvous_order

SYSTEM = {"role": "system", "content": "You are a helpful bot."}
DEPLOYMENT = DeploymentID(name="model-chat", app_name="default")


def _chat(*turns: str, scope: str = "key-a", conversation=None, adapter=None) -> GenerationRequest:
    messages = [SYSTEM]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return GenerationRequest("r", SamplingParams(), messages=tuple(messages), cache_scope=scope,
                             conversation=conversation, adapter=adapter)


def test_a_resent_history_keeps_its_key_turn_after_turn():
    first = affinity_key("stream", [_chat("Hi, I am Ann.")])
    later = affinity_key("stream", [_chat("Hi, I am Ann.", "Hello Ann!", "What is my name?")])
    assert first == later
    assert affinity_key("stream", [_chat("Hi, I am Bob.")]) != first  # another chat
    assert affinity_key("stream", [_chat("Hi, I am Ann.", scope="key-b")]) != first  # another key
    assert affinity_key("stream", [_chat("Hi, I am Ann.", adapter="pirate")]) != first


def test_a_session_is_its_conversation_and_forget_follows_it():
    turn = _chat("anything", conversation="boot-abc/s1")
    assert affinity_key("stream", [turn]) == "boot-abc/s1"
    assert affinity_key("stream", [_chat("other", conversation="boot-abc/s1")]) == "boot-abc/s1"
    # Deleting the session asks the replica that served its turns.
    assert affinity_key("forget_conversation", ["boot-abc/s1"]) == "boot-abc/s1"


def test_a_prompt_is_known_by_its_first_characters():
    start = "x" * PROMPT_START_CHARS
    key = affinity_key("stream", [GenerationRequest("r", SamplingParams(), prompt=start + " turn one")])
    assert key == affinity_key("stream", [GenerationRequest("r", SamplingParams(), prompt=start + " turn two")])
    assert key != affinity_key("stream", [GenerationRequest("r", SamplingParams(), prompt="y" + start)])


def test_other_calls_have_no_key():
    assert affinity_key("embed", ["req-1", ["some text"]]) is None
    assert affinity_key("status", []) is None and affinity_key("reconfigure", [{"name": "x"}]) is None
    assert affinity_key("stream", [GenerationRequest("r", SamplingParams())]) is None  # nothing to hash
    assert affinity_key("stream", []) is None


IDS = [f"replica{i}" for i in range(4)]
KEYS = [f"boot-key/session-{i}" for i in range(2000)]


def test_rendezvous_is_stable_whatever_the_order_of_replicas():
    for key in KEYS[:50]:
        assert rendezvous_order(key, IDS)[0] == rendezvous_order(key, list(reversed(IDS)))[0]
        assert sorted(rendezvous_order(key, IDS)) == sorted(IDS)


def test_rendezvous_spreads_keys_evenly():
    shares = Counter(rendezvous_order(key, IDS)[0] for key in KEYS)
    assert set(shares) == set(IDS)
    assert all(0.2 < count / len(KEYS) < 0.3 for count in shares.values()), shares


def test_a_removed_replica_moves_only_its_own_keys_and_an_added_one_takes_only_its_share():
    before = {key: rendezvous_order(key, IDS)[0] for key in KEYS}
    after = {key: rendezvous_order(key, IDS[:3])[0] for key in KEYS}  # replica3 gone
    moved = [key for key in KEYS if before[key] != after[key]]
    assert moved and all(before[key] == "replica3" for key in moved)
    assert len(moved) == Counter(before.values())["replica3"]
    grown = {key: rendezvous_order(key, IDS + ["replica4"])[0] for key in KEYS}
    assert all(grown[key] in (before[key], "replica4") for key in KEYS)


class StandIn:
    """What Ray's routing loop asks of a replica: its id, limit and queue length."""

    def __init__(self, unique_id: str, limit: int = 4):
        self.replica_id = ReplicaID(unique_id, DEPLOYMENT)
        self.max_ongoing_requests = limit
        self.dead = False
        self.full_for = 0  # probes answered "at the limit" before it frees up (a router that never
        # falls back then ends up here, and the test fails instead of waiting forever)

    async def get_queue_len(self, *, deadline_s: float) -> int:
        if self.dead:
            raise ActorDiedError()
        self.full_for -= 1
        return self.max_ongoing_requests if self.full_for >= 0 else 0


def _pending(method: str, args: list, n: int) -> PendingRequest:
    return PendingRequest(args=args, kwargs={}, metadata=RequestMetadata(
        request_id=f"r{n}", internal_request_id=f"i{n}", call_method=method))


def _route(replicas: list[StandIn], requests: list[tuple[str, list]]) -> list[str]:
    """The replica Ray's loop picks for each request, with ConversationRouter's ranks."""
    async def run():
        router = ConversationRouter(deployment_id=DEPLOYMENT, handle_source=DeploymentHandleSource.UNKNOWN)
        router.update_replicas(replicas)
        chosen = []
        for n, (method, args) in enumerate(requests):
            replica = await router._choose_replica_for_request(_pending(method, args, n))
            chosen.append(replica.replica_id.unique_id)
        return chosen

    return asyncio.run(run())


@pytest.fixture(autouse=True)
def _seeded():
    random.seed(7)  # the default choice among the rest is random: same draw every run


def test_each_conversation_sticks_to_its_rendezvous_replica():
    replicas = [StandIn(f"replica{i}") for i in range(3)]
    chats = [f"boot-key/s{i}" for i in range(12)]
    requests = [("stream", [_chat(f"turn {t}", conversation=chat)]) for t in range(4) for chat in chats]
    chosen = _route(replicas, requests)
    expected = [rendezvous_order(chat, [r.replica_id.unique_id for r in replicas])[0]
                for t in range(4) for chat in chats]
    assert chosen == expected
    assert len(set(chosen)) == 3  # twelve chats over three replicas: none idle


def test_requests_without_a_key_are_spread_as_by_default():
    replicas = [StandIn("replica0"), StandIn("replica1")]
    chosen = _route(replicas, [("embed", ["req", ["text"]])] * 40)
    assert set(chosen) == {"replica0", "replica1"}


def test_a_full_preferred_replica_falls_back_to_another():
    replicas = [StandIn(f"replica{i}") for i in range(3)]
    request = _chat("hi", conversation="boot-key/s1")
    preferred = rendezvous_order("boot-key/s1", [r.replica_id.unique_id for r in replicas])[0]
    next(r for r in replicas if r.replica_id.unique_id == preferred).full_for = 20
    chosen = _route(replicas, [("stream", [request])] * 5)
    assert preferred not in chosen


def test_a_dead_preferred_replica_falls_back_and_is_dropped():
    replicas = [StandIn(f"replica{i}") for i in range(3)]
    preferred = rendezvous_order("boot-key/s1", [r.replica_id.unique_id for r in replicas])[0]
    next(r for r in replicas if r.replica_id.unique_id == preferred).dead = True
    chosen = _route(replicas, [("stream", [_chat("hi", conversation="boot-key/s1")])] * 3)
    assert preferred not in chosen
    # With the dead one dropped, the conversation settles on its next rendezvous replica.
    survivors = [r.replica_id.unique_id for r in replicas if r.replica_id.unique_id != preferred]
    assert chosen[1:] == [rendezvous_order("boot-key/s1", survivors)[0]] * 2


def test_one_replica_takes_everything():
    assert _route([StandIn("only")], [("stream", [_chat("hi")]), ("embed", ["r", ["t"]])]) == ["only", "only"]


def test_only_gguf_chat_models_are_routed_by_conversation():
    from deployments.config import parse_models
    from serve_app.builder import _model_options

    models = parse_models({"models": {"chat": {"type": "gguf", "path": "x.gguf"},
                                      "text": {"type": "transformers", "path": "tiny"},
                                      "vec": {"type": "onnx", "task": "embed", "path": "m.onnx"}}}).models
    router = _model_options("chat", models["chat"], True)["request_router_config"]
    assert router.get_request_router_class() is ConversationRouter
    assert "request_router_config" not in _model_options("text", models["text"], False)
    assert "request_router_config" not in _model_options("vec", models["vec"], False)
