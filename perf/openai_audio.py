"""An asyncio client of OpenAI's ``POST /v1/audio/transcriptions`` for the benchmarks (httpx).

One client code drives both servers that speak this API, this project's gateway
(``qwen3-asr serve-openai``) and vLLM's OpenAI server, so that what the client
itself costs is the same for both. It sends what OpenAI's SDK sends: a multipart
form with the WAV file and the fields as strings, over a pool of keep-alive
connections; it skips the SDK's own layers (request options, retries, pydantic
models of the answer), which would add the same to both systems.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from perf.clips import BenchClip

logger = logging.getLogger(__name__)

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
# Name and media type of the uploaded part, as OpenAI's SDK sends a WAV file.
UPLOAD_NAME = "clip.wav"
UPLOAD_TYPE = "audio/wav"
# Connections kept open: well above the highest concurrency the benchmarks use (8-16), so that no
# request waits for a connection of the client's own pool.
MAX_CONNECTIONS = 64
# Seconds to open a connection to a server on this machine: a refusal shows at once anyway.
CONNECT_TIMEOUT_S = 10.0
# Prefix of a server-sent event's data line.
SSE_DATA = "data:"


class TranscriptionError(RuntimeError):
    """The server answered with an error status (the body is in the message)."""


@dataclass(frozen=True)
class StreamedTranscript:
    """What a streamed transcription gave.

    Attributes
    ----------
    text : str
        The deltas joined.
    completion_tokens : int or None
        Generated tokens as the server's final ``usage`` counted them (None without usage).
    """

    text: str
    completion_tokens: int | None


class TranscriptionsClient:
    """``/v1/audio/transcriptions`` of one server; create it on the event loop that will use it.

    Parameters
    ----------
    base_url : str
        ``http://127.0.0.1:PORT`` of the server.
    timeout_s : float
        Seconds one request may take (reading the answer included).
    api_key : str, optional
        Sent as ``Authorization: Bearer KEY`` when given.
    """

    def __init__(self, base_url: str, timeout_s: float, api_key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS),
        )

    @staticmethod
    def _files(clip: BenchClip) -> dict[str, tuple[str, bytes, str]]:
        return {"file": (UPLOAD_NAME, clip.wav, UPLOAD_TYPE)}

    async def transcribe(self, clip: BenchClip, fields: Mapping[str, str]) -> dict:
        """One unary request; the decoded JSON body (``response_format`` json or verbose_json).

        Raises
        ------
        TranscriptionError
            Any status but 200.
        """
        response = await self._client.post(TRANSCRIPTIONS_PATH, data=dict(fields), files=self._files(clip))
        if response.status_code != 200:
            raise TranscriptionError(f"HTTP {response.status_code}: {response.text[:500]}")
        return response.json()

    async def transcribe_stream(self, clip: BenchClip, fields: Mapping[str, str]) -> StreamedTranscript:
        """A streamed request (``fields`` must ask for the stream); its text and final usage.

        Reads vLLM's chunks (``choices[].delta.content``, ``usage.completion_tokens``) and this
        project's gateway's events (``transcript.text.delta`` / ``transcript.text.done``).

        Raises
        ------
        TranscriptionError
            Any status but 200, or an error event in the stream.
        """
        parts: list[str] = []
        tokens: int | None = None
        request = self._client.build_request("POST", TRANSCRIPTIONS_PATH, data=dict(fields), files=self._files(clip))
        response = await self._client.send(request, stream=True)
        try:
            if response.status_code != 200:
                body = await response.aread()
                raise TranscriptionError(f"HTTP {response.status_code}: {body[:500]!r}")
            async for line in response.aiter_lines():
                if not line.startswith(SSE_DATA):
                    continue
                payload = line[len(SSE_DATA) :].strip()
                if payload == "[DONE]":
                    continue
                event = json.loads(payload)
                if "error" in event:
                    raise TranscriptionError(f"error event: {json.dumps(event)[:500]}")
                if event.get("type") == "transcript.text.delta":
                    parts.append(event.get("delta", ""))
                for choice in event.get("choices") or ():
                    parts.append((choice.get("delta") or {}).get("content") or "")
                usage = event.get("usage") or {}
                if "completion_tokens" in usage:
                    tokens = int(usage["completion_tokens"])
        finally:
            await response.aclose()
        return StreamedTranscript("".join(parts), tokens)

    async def get(self, path: str) -> httpx.Response:
        """A plain GET on the same connections (models list, health, metrics)."""
        return await self._client.get(path)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()
