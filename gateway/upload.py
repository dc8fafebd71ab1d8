"""Bounded reading of a ``multipart/form-data`` upload as it streams in.

The body is parsed chunk by chunk as the client sends it (python-multipart's
streaming parser), so an upload is refused as soon as it passes a limit, never
after it was read whole: the ``Content-Length`` header is checked before the
first byte is read, and every chunk is counted as it arrives (a chunked upload
has no length to check). Stalled and endless uploads are cut off by timeouts, since
uvicorn has none for request bodies. The audio is kept in memory, bounded by
``max_file_bytes``, because it goes to Triton in one gRPC message anyway.
Other fields are kept as text, bounded in number and size; unknown ones are
kept too (the caller ignores them, as OpenAI does).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from .errors import ApiError, invalid

logger = logging.getLogger(__name__)

# The form field that carries the audio (OpenAI's name).
FILE_FIELD = "file"
# Fields besides the file: OpenAI's transcription API has about 15, arrays repeat a few.
MAX_FIELDS = 32
# Longest value of one field: a prompt far beyond the server's CONTEXT limit (2048 tokens,
# ~8 KB of English or ~9 KB of CJK text) still fits, while a field cannot hold an upload.
MAX_FIELD_BYTES = 64 * 1024
# Everything that is not the audio (fields, part headers, boundaries) together; the body may
# exceed max_file_bytes by this much, and a Content-Length above that is refused unread.
FORM_OVERHEAD_BYTES = 256 * 1024
# Headers of one part: Content-Disposition and Content-Type are a few hundred bytes at most.
MAX_PART_HEADER_BYTES = 8 * 1024
# An upload that sends nothing at all for this long has stalled (a working link, even a slow one,
# delivers some bytes every few seconds; TCP's retransmission backoff passes 30 s only when it is
# broken). Its slot under the concurrency limit is freed with a 408.
UPLOAD_IDLE_SECONDS = 30.0


@dataclass
class UploadForm:
    """A parsed upload.

    Attributes
    ----------
    file : bytes or None
        The audio, None when the form had no ``file`` part.
    filename : str or None
        The file name the client gave (for logs only; the server sniffs the format).
    fields : dict of str to list of str
        Every other field, its values in order.
    """

    file: bytes | None = None
    filename: str | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)


def too_large(max_file_bytes: int) -> ApiError:
    """400 for an upload over the limit (OpenAI answers 400 too, not 413)."""
    return ApiError(
        400,
        f"the audio file is larger than the limit of {max_file_bytes} bytes",
        param=FILE_FIELD,
        code="file_too_large",
    )


def _decode(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(f"{what} is not valid UTF-8", param=what if what != "part header" else None) from None


class _FormCollector:
    """python-multipart callbacks that keep the parts within the limits."""

    def __init__(self, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.form = UploadForm()
        self.fields = 0
        self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._header_bytes = 0
        self._disposition: bytes | None = None
        self._name: str | None = None
        self._is_file = False
        self._ignored = False
        self._size = 0
        self._data = bytearray()

    # ---- parts
    def on_part_begin(self) -> None:
        self._header_bytes = 0
        self._disposition = None
        self._name = None
        self._is_file = False
        self._ignored = False
        self._size = 0
        self._data = bytearray()

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise invalid(f"a part's headers exceed {MAX_PART_HEADER_BYTES} bytes", code="invalid_multipart")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_name).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        name = params.get(b"name")
        if name is None:
            raise invalid("every part of the form needs a Content-Disposition name", code="invalid_multipart")
        self._name = _decode(name, "part header")
        if self._name == FILE_FIELD:
            if self.form.file is not None:
                raise invalid("the form has more than one file", param=FILE_FIELD)
            self._is_file = True
            filename = params.get(b"filename")
            self.form.filename = filename.decode("utf-8", errors="replace") if filename is not None else None
            return
        self.fields += 1
        if self.fields > MAX_FIELDS:
            raise invalid(f"the form has more than {MAX_FIELDS} fields", code="too_many_fields")
        # Another file than the audio is ignored like any unknown field (bounded, never decoded).
        self._ignored = b"filename" in params

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._is_file:
            if self._size > self.max_file_bytes:
                raise too_large(self.max_file_bytes)
        elif self._size > MAX_FIELD_BYTES:
            raise invalid(f"field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes", param=self._name)
        if not self._ignored:
            self._data += data[start:end]

    def on_part_end(self) -> None:
        if self._name is None or self._ignored:
            self._name = None
            return
        if self._is_file:
            self.form.file = bytes(self._data)
        else:
            self.form.fields.setdefault(self._name, []).append(_decode(bytes(self._data), self._name))
        self._name = None
        self._data = bytearray()

    def on_end(self) -> None:
        self.ended = True

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }


def multipart_boundary(headers: Mapping[str, str]) -> bytes:
    """The boundary of a ``multipart/form-data`` request; 400 for any other content type."""
    content_type, params = parse_options_header(headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise invalid("the request body must be multipart/form-data", code="invalid_content_type")
    boundary = params.get(b"boundary")
    if not boundary:
        raise invalid("the multipart/form-data content type has no boundary", code="invalid_content_type")
    return boundary


def check_content_length(headers: Mapping[str, str], max_file_bytes: int) -> None:
    """Refuse a declared body longer than the file limit plus the form's overhead, before reading it."""
    declared = headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise invalid("Content-Length is not a number", code="invalid_content_length") from None
    if length > max_file_bytes + FORM_OVERHEAD_BYTES:
        raise too_large(max_file_bytes)


def upload_timeout(message: str) -> ApiError:
    """408 for an upload that stalled or took too long."""
    return ApiError(408, message, code="upload_timeout")


async def _arrivals(body: AsyncIterator[bytes], idle: float, total: float) -> AsyncIterator[bytes]:
    """The chunks of ``body``; 408 when none comes for ``idle`` seconds or the whole takes over ``total``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total
    chunks = body.__aiter__()
    while True:
        left = deadline - loop.time()
        wait = min(idle, left)
        try:
            chunk = await asyncio.wait_for(anext(chunks), max(0.0, wait))
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            if wait < idle:
                raise upload_timeout(f"the upload took longer than {total:g} s") from None
            raise upload_timeout(f"the upload stalled: nothing arrived for {idle:g} s") from None
        yield chunk


async def read_form(
    headers: Mapping[str, str],
    body: AsyncIterator[bytes],
    max_file_bytes: int,
    idle_timeout: float = UPLOAD_IDLE_SECONDS,
    total_timeout: float = math.inf,
) -> UploadForm:
    """Parse a multipart upload as it arrives, within the limits.

    Parameters
    ----------
    headers : mapping
        The request headers (lower-case names): Content-Type, Content-Length.
    body : async iterator of bytes
        The body as it arrives (Starlette's ``request.stream()``).
    max_file_bytes : int
        Largest ``file`` part accepted.
    idle_timeout : float
        Seconds the body may stall (no bytes at all) before the upload is refused.
    total_timeout : float
        Seconds the whole body may take.

    Raises
    ------
    ApiError
        400: not multipart, malformed, truncated, a field or the file over its limit
        (``file_too_large``, checked against Content-Length first), too many fields;
        408 ``upload_timeout``: the body stalled or took too long.
    """
    boundary = multipart_boundary(headers)
    check_content_length(headers, max_file_bytes)
    collector = _FormCollector(max_file_bytes)
    parser = MultipartParser(boundary, collector.callbacks())
    limit = max_file_bytes + FORM_OVERHEAD_BYTES
    received = 0
    try:
        async for chunk in _arrivals(body, idle_timeout, total_timeout):
            received += len(chunk)
            if received > limit:
                raise too_large(max_file_bytes)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        logger.debug("malformed multipart body: %s", exc)
        raise invalid("the multipart/form-data body is malformed", code="invalid_multipart") from None
    if not collector.ended:
        raise invalid("the multipart/form-data body ended before its closing boundary", code="invalid_multipart")
    return collector.form
