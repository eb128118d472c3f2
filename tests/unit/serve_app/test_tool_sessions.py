"""The service's one tool path (GenerationService with a ToolUse) with a session: the replica gets
the grammar and the tools' description, the session keeps the conversation (the call as the model
wrote it, the tool's result) and never the description. Stand-in replica (tests/unit/in_process.py);
the real app and SmolLM2 in tests/integration/test_tool_channels.py."""

import asyncio

from core.types import Usage
from serve_app.protocol.api_v1 import ChatRequest
from serve_app.serving import RequestOptions
from tests.unit.admissions import admission
from tests.unit.in_process import FakeReplica
from tests.unit.serve_app.test_session_turns import MODEL, OWNER, _service

CALL = '{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}'
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}}


def _answers(answers) -> FakeReplica:
    """Answers each request with the next of `answers`."""
    texts = iter(answers)
    return FakeReplica(pieces=lambda request: [next(texts)], usage=Usage(300, 20))


def test_a_session_keeps_the_calls_and_results_but_not_the_tools_description():
    replica = _answers([CALL, "It is sunny."])
    service, sessions, _ = _service(replica)

    async def turn(body: dict) -> str:
        request = ChatRequest.model_validate({**body, "session_id": "s", "tools": [TOOL]})
        generation = await service.start(
            admission(), MODEL, "r", request.to_sampling_params(), messages=[m.as_dict() for m in request.messages],
            tools=request.tool_use(), options=RequestOptions(endpoint="chat", owner=OWNER, session_id="s"))
        return (await generation.collect()).text

    async def scenario():
        await turn({"messages": [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Weather in Paris?"}], "tool_choice": "required"})
        await turn({"messages": [{"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"}],
                    "tool_choice": "none"})
        return await sessions.load(OWNER, "s")

    record = asyncio.run(scenario())
    first, second = replica.requests
    assert first.sampling.grammar is not None and second.sampling.grammar is None
    assert first.messages[0]["role"] == "system" and first.messages[0]["content"].startswith("Be brief.\n\n")
    assert "get_weather" in first.messages[0]["content"]
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "user"]
    assert second.messages[0]["content"] == "Be brief." and second.messages[2]["content"] == CALL
    stored = record["messages"]
    # kept in OpenAI's shape (the tool's result as a `tool` message), written for the template each turn
    assert second.messages[3]["content"] == '{"tool_response": {"tool_call_id": "call_1", "content": "18 degrees"}}'
    assert [m["content"] for m in stored] == ["Be brief.", "Weather in Paris?", CALL, "18 degrees", "It is sunny."]
    assert stored[3] == {"role": "tool", "content": "18 degrees", "tool_call_id": "call_1"}
