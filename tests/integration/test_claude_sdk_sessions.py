"""The real ``claude_agent_sdk.ClaudeSDKClient`` over an in-process ``Transport`` (no CLI needed).

The transport speaks the SDK's control protocol just enough: it answers ``initialize`` and
echoes each user prompt back as an assistant message followed by a result message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from claude_agent_sdk import ClaudeSDKClient, Transport
from claude_agent_sdk.types import AssistantMessage, ResultMessage
from opentelemetry.trace import StatusCode

from scopewatch import semconv

SPAN = semconv.SPAN_SESSION_PREFIX + semconv.SESSION_KIND_CLAUDE_SDK_CLIENT
KIND = semconv.SESSION_KIND_CLAUDE_SDK_CLIENT


class EchoTransport(Transport):
    """An in-memory stand-in for the Claude Code CLI."""

    def __init__(self, fail_initialize: bool = False) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[dict[str, Any]](100)
        self._fail_initialize = fail_initialize
        self.closed = False

    async def connect(self) -> None:
        return None

    async def write(self, data: str) -> None:
        message = json.loads(data)
        if message.get("type") == "control_request":
            request_id = message["request_id"]
            if self._fail_initialize:
                response = {"subtype": "error", "request_id": request_id, "error": "refused"}
            else:
                response = {"subtype": "success", "request_id": request_id, "response": {}}
            await self._send.send({"type": "control_response", "response": response})
        elif message.get("type") == "user":
            text = message["message"]["content"]
            await self._send.send(
                {
                    "type": "assistant",
                    "message": {
                        "role": "assistant",
                        "model": "echo",
                        "content": [{"type": "text", "text": f"echo: {text}"}],
                    },
                    "parent_tool_use_id": None,
                    "session_id": "default",
                }
            )
            await self._send.send(
                {
                    "type": "result",
                    "subtype": "success",
                    "duration_ms": 1,
                    "duration_api_ms": 1,
                    "is_error": False,
                    "num_turns": 1,
                    "session_id": "default",
                    "total_cost_usd": 0.0,
                    "usage": {},
                    "result": f"echo: {text}",
                }
            )

    async def read_messages(self) -> AsyncIterator[dict[str, Any]]:
        async for message in self._receive:
            yield message

    async def close(self) -> None:
        self.closed = True
        self._send.close()

    def is_ready(self) -> bool:
        return not self.closed

    async def end_input(self) -> None:
        return None


async def _converse(client: ClaudeSDKClient) -> list[str]:
    await client.query("hello")
    texts = []
    async for message in client.receive_response():
        if isinstance(message, AssistantMessage):
            texts.extend(block.text for block in message.content if hasattr(block, "text"))
        elif isinstance(message, ResultMessage):
            texts.append(f"result:{message.result}")
    return texts


def _durations(telemetry: Any) -> dict[tuple[str, str], int]:
    return {
        (p.attributes[semconv.SESSION_KIND], p.attributes[semconv.SESSION_OUTCOME]): p.count
        for p in telemetry.points(semconv.METRIC_SESSION_DURATION)
    }


def test_async_with_is_one_session(instrument: Any) -> None:
    telemetry = instrument(instrument="sessions")
    transport = EchoTransport()

    async def main() -> list[str]:
        async with ClaudeSDKClient(transport=transport) as client:
            return await _converse(client)

    assert asyncio.run(main()) == ["echo: hello", "result:echo: hello"]
    assert transport.closed
    (span,) = telemetry.spans(SPAN)
    assert span.attributes[semconv.SESSION_KIND] == KIND
    assert span.attributes[semconv.SESSION_OUTCOME] == semconv.OUTCOME_OK
    assert span.attributes[semconv.CROSS_TASK] is False
    assert _durations(telemetry) == {(KIND, semconv.OUTCOME_OK): 1}
    assert [p.value for p in telemetry.points(semconv.METRIC_SESSION_ACTIVE)] == [0]


def test_connect_disconnect_and_body_error(instrument: Any) -> None:
    telemetry = instrument(instrument="sessions")

    async def main() -> None:
        client = ClaudeSDKClient(transport=EchoTransport())
        await client.connect()
        assert await _converse(client) == ["echo: hello", "result:echo: hello"]
        await client.disconnect()
        with pytest.raises(ZeroDivisionError):
            async with ClaudeSDKClient(transport=EchoTransport()):
                1 / 0

    asyncio.run(main())
    assert _durations(telemetry) == {
        (KIND, semconv.OUTCOME_OK): 1,
        (KIND, semconv.OUTCOME_ERROR): 1,
    }


def test_failed_connect_is_an_error_session(instrument: Any) -> None:
    telemetry = instrument(instrument="sessions")

    async def main() -> None:
        client = ClaudeSDKClient(transport=EchoTransport(fail_initialize=True))
        with pytest.raises(Exception, match="refused"):
            await client.connect()

    asyncio.run(main())
    (span,) = telemetry.spans(SPAN)
    assert span.attributes[semconv.SESSION_OUTCOME] == semconv.OUTCOME_ERROR
    assert span.status.status_code is StatusCode.ERROR
    assert _durations(telemetry) == {(KIND, semconv.OUTCOME_ERROR): 1}


def test_disconnect_from_another_task_is_on_the_span(instrument: Any) -> None:
    telemetry = instrument(instrument="sessions")

    async def main() -> None:
        client = ClaudeSDKClient(transport=EchoTransport())
        await asyncio.create_task(client.connect(), name="connector")
        await asyncio.create_task(client.disconnect(), name="disconnector")

    asyncio.run(main())
    (span,) = telemetry.spans(SPAN)
    assert span.attributes[semconv.ENTER_TASK] == "connector"
    assert span.attributes[semconv.EXIT_TASK] == "disconnector"
    assert span.attributes[semconv.VIOLATION_KIND] == semconv.KIND_CROSS_TASK_EXIT
    assert span.status.status_code is StatusCode.ERROR


def test_restored_on_uninstrument(instrument: Any) -> None:
    originals = {
        name: ClaudeSDKClient.__dict__[name] for name in ("connect", "disconnect", "__aexit__")
    }
    telemetry = instrument(instrument="sessions")
    assert ClaudeSDKClient.__dict__["connect"] is not originals["connect"]
    telemetry.uninstrument()
    for name, original in originals.items():
        assert ClaudeSDKClient.__dict__[name] is original
