"""Grammar-constrained decoding in the llama.cpp engine, on the real SmolLM2 GGUF (no Ray).

Schemas go through the ingress's converter (serve_app/structured_output.py), exactly as requests
do; every answer is parsed and validated with jsonschema. Constrained and free sequences share
decode steps: the engine's step record shows it.
"""

import asyncio
import json
from typing import Optional

import jsonschema
import pytest
from openai.lib._pydantic import to_strict_json_schema

from core.types import GenerationRequest, SamplingParams
from serve_app.structured_output import json_object_grammar, schema_grammar
from tests.engine.test_llama_engine import run, steps
from tests.structured_models import EMAIL, Triage

SCHEMAS = {
    "triage (pydantic, strict)": to_strict_json_schema(Triage),
    "nested arrays with bounds": {
        "type": "object", "additionalProperties": False, "required": ["rows"],
        "properties": {"rows": {"type": "array", "minItems": 2, "maxItems": 3, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "scores"],
            "properties": {"name": {"type": "string", "maxLength": 20},
                           "scores": {"type": "array", "maxItems": 4, "items": {"type": "integer", "minimum": 0}}},
        }}},
    },
    "enum and number": {
        "type": "object", "required": ["colour", "weight"], "additionalProperties": False,
        "properties": {"colour": {"enum": ["red", "green", "blue"]}, "weight": {"type": "number"}},
    },
}


def constrained(rid: str, grammar: str, temperature: float = 0.7, seed: Optional[int] = None,
                prompt: str = EMAIL) -> GenerationRequest:
    sampling = SamplingParams(max_tokens=300, temperature=temperature, seed=seed, grammar=grammar)
    return GenerationRequest(request_id=rid, sampling=sampling, messages=({"role": "user", "content": prompt},))


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_constrained_answer_parses_and_validates(smollm2, name):
    schema = SCHEMAS[name]
    grammar = schema_grammar(schema)

    async def many():
        return await asyncio.gather(*(run(smollm2, constrained(f"{name}-{i}", grammar, seed=i)) for i in range(6)))

    for text, final in asyncio.run(many()):
        assert final.finish_reason == "stop", (text, final)
        jsonschema.validate(json.loads(text), schema)


def test_json_object_mode_answers_an_object(smollm2):
    prompt = 'Give a JSON object with the keys "name" and "age" for Ann, who is 31.'
    text, final = asyncio.run(run(smollm2, constrained("object", json_object_grammar(), 0, prompt=prompt)))
    assert final.finish_reason == "stop"
    assert isinstance(json.loads(text), dict)


def test_constrained_and_free_sequences_share_decode_steps(smollm2):
    grammar = schema_grammar(SCHEMAS["triage (pydantic, strict)"])
    free = GenerationRequest(request_id="free-0", sampling=SamplingParams(max_tokens=60, temperature=0.7, seed=1),
                             messages=({"role": "user", "content": "Tell me about the sea."},))

    async def mixed():
        return await asyncio.gather(run(smollm2, constrained("json-0", grammar, seed=3)), run(smollm2, free))

    (text, _), (free_text, _) = asyncio.run(mixed())
    jsonschema.validate(json.loads(text), SCHEMAS["triage (pydantic, strict)"])
    assert free_text
    shared = [r for r in steps(smollm2) if "json-0" in r["decode"] and "free-0" in r["decode"]]
    assert shared, "the constrained and the free sequence never decoded in the same step"


def test_a_constraint_cut_by_max_tokens_ends_with_length(smollm2):
    sampling = SamplingParams(max_tokens=5, temperature=0, grammar=schema_grammar(SCHEMAS["triage (pydantic, strict)"]))
    request = GenerationRequest(request_id="short", sampling=sampling, messages=({"role": "user", "content": EMAIL},))
    text, final = asyncio.run(run(smollm2, request))
    assert final.finish_reason == "length" and final.usage.completion_tokens == 5
    assert text.startswith("{")


def test_logit_bias_bans_a_token(smollm2):
    base = dict(max_tokens=8, temperature=0)
    messages = ({"role": "user", "content": "Say the word hello."},)
    text, _ = asyncio.run(run(smollm2, GenerationRequest("plain", SamplingParams(**base), messages=messages)))
    first = smollm2.model.tokenize(text.encode(), add_bos=False, special=False)[0]
    banned = SamplingParams(**base, logit_bias=((first, -100.0),))
    other, _ = asyncio.run(run(smollm2, GenerationRequest("banned", banned, messages=messages)))
    assert smollm2.model.tokenize(other.encode(), add_bos=False, special=False)[0] != first


def test_logprobs_cover_every_token_and_agree_with_greedy_choice(smollm2):
    sampling = SamplingParams(max_tokens=12, temperature=0, logprobs=3, ignore_eos=True, repeat_penalty=1.0)
    request = GenerationRequest("lp", sampling, messages=({"role": "user", "content": "Name a colour."},))

    async def chunks():
        return [chunk async for chunk in smollm2.stream(request)]

    got = asyncio.run(chunks())
    entries = [entry for chunk in got for entry in chunk.logprobs]
    assert len(entries) == 12 and b"".join(piece for piece, _, _ in entries).decode() == "".join(c.text for c in got)
    for piece, logprob, top in entries:
        assert logprob <= 0 and len(top) == 3
        assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
        assert top[0][0] == piece and abs(top[0][1] - logprob) < 1e-6  # greedy took the most likely token


def test_a_greedy_draw_after_rows_were_moved_still_reads_token_ids(smollm2):
    """The grammar sampler rewrites its candidates' token ids only after a draw whose samplers moved
    rows (top-k sorts and cuts them); a greedy draw must still find the most likely token after one."""
    import llama_cpp as lib
    import numpy as np

    from deployments.engine.grammar import GrammarSampler
    from deployments.engine.samplers import sampler_chain

    model = smollm2.model.model
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_threads, params.n_threads_batch = 128, 2, 2
    ctx = lib.llama_init_from_model(model, params)
    vocab = lib.llama_model_get_vocab(model)
    n_vocab = lib.llama_vocab_n_tokens(vocab)
    sampler = GrammarSampler(lib, vocab, n_vocab)
    greedy = sampler_chain(lib, SamplingParams(temperature=0), n_vocab)
    sampled = sampler_chain(lib, SamplingParams(temperature=1.0, seed=7), n_vocab)
    try:
        tokens = smollm2.model.tokenize(b"The colour of the sky is", add_bos=True, special=False)
        assert lib.llama_decode(ctx, lib.llama_batch_get_one((lib.llama_token * len(tokens))(*tokens), len(tokens))) == 0
        best = int(np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).argmax())
        assert sampler._draw(ctx, -1, greedy) == best and not sampler._moved  # greedy leaves rows in place
        for _ in range(3):
            sampler._draw(ctx, -1, sampled)
            assert sampler._moved
            assert sampler._draw(ctx, -1, greedy) == best
    finally:
        for chain in (greedy, sampled):
            lib.llama_sampler_free(chain)
        sampler.free()
        lib.llama_free(ctx)
