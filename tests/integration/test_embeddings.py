"""Embeddings through the real Serve app: all-MiniLM-L6-v2 as SafeTensors (transformers) and int8 ONNX."""

import base64
import math
import struct

import openai
import pytest

from tests.integration.conftest import DEFAULT, KEY, MINILM, MINILM_INT8

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The stock market fell sharply today.",
]


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture
def oai(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0)


@pytest.mark.parametrize("model", [MINILM, MINILM_INT8])
def test_similar_sentences_are_closer_than_unrelated(client, model):
    r = client.post("/v1/embeddings", json={"model": model, "input": SENTENCES})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == model
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    vectors = [d["embedding"] for d in body["data"]]
    assert all(len(v) == 384 and abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors)
    food, bread, movie, market = vectors
    assert _cos(food, bread) > 0.6
    assert _cos(food, bread) > _cos(food, movie) + 0.3
    assert _cos(food, bread) > _cos(food, market) + 0.3
    usage = body["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > len(" ".join(SENTENCES).split())


def test_onnx_and_safetensors_vectors_agree(client):
    both = [client.post("/v1/embeddings", json={"model": m, "input": SENTENCES}).json() for m in (MINILM, MINILM_INT8)]
    for a, b in zip(both[0]["data"], both[1]["data"]):
        assert _cos(a["embedding"], b["embedding"]) > 0.99
    assert both[0]["usage"] == both[1]["usage"]  # the same tokenizer


def test_openai_client_string_and_list_input(oai):
    one = oai.embeddings.create(model=MINILM, input="The new movie is awesome.")  # the client asks for base64
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    many = oai.embeddings.create(model=MINILM, input=SENTENCES, encoding_format="float")
    assert len(many.data) == 4 and many.usage.prompt_tokens > one.usage.prompt_tokens
    assert _cos(one.data[0].embedding, many.data[2].embedding) > 0.9999  # batching does not change a vector


def test_base64_encoding_is_little_endian_float32(client):
    plain = client.post("/v1/embeddings", json={"model": MINILM_INT8, "input": "hello"}).json()
    packed = client.post("/v1/embeddings",
                         json={"model": MINILM_INT8, "input": "hello", "encoding_format": "base64"}).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert max(abs(x - y) for x, y in zip(decoded, plain["data"][0]["embedding"])) < 1e-6


def test_api_v1_embeddings_shape_and_default_model(client):
    r = client.post("/api/v1/embeddings", json={"input": ["A man is eating food.", "A man is eating bread."]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"embeddings", "model", "dimensions", "tokens_used", "processing_time", "timestamp"}
    assert body["model"] == MINILM and body["dimensions"] == 384 and len(body["embeddings"]) == 2
    assert body["tokens_used"] > 0 and _cos(*body["embeddings"]) > 0.6


@pytest.mark.parametrize("path,body,param", [
    ("/v1/chat/completions", {"model": MINILM, "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ("/v1/completions", {"model": MINILM_INT8, "prompt": "hi"}, "model"),
    ("/api/v1/generate", {"model": MINILM, "prompt": "hi"}, "model"),
    ("/v1/embeddings", {"model": DEFAULT, "input": "hi"}, "model"),
    ("/api/v1/embeddings", {"model": DEFAULT, "input": "hi"}, "model"),
    ("/v1/embeddings", {"model": MINILM, "input": []}, "input"),
    ("/v1/embeddings", {"model": MINILM, "input": ["ok", ""]}, "input"),
    ("/v1/embeddings", {"model": MINILM, "input": "word " * 400}, "input"),
    ("/v1/embeddings", {"model": MINILM_INT8, "input": "hi", "dimensions": 128}, "dimensions"),
    ("/api/v1/embeddings", {"input": "hi", "colour": "red"}, "colour"),
])
def test_wrong_task_and_bad_input_are_400(client, path, body, param):
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_404_and_replicas_survive(client):
    r = client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert client.post("/v1/embeddings", json={"model": MINILM, "input": "still here"}).status_code == 200
