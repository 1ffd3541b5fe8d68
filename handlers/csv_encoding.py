"""Encoding checks for the `csv-profile` job type: UTF-8, UTF-8 with a BOM, or cp1252.

A profile checks every byte's encoding before it parses anything, because a cp1252 byte may sit
anywhere in a file that starts out as plain ASCII. The check is cheap: it decodes without
keeping the text.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from queueing.errors import InvalidInput

# The start of the input that `parse` checks and that the delimiter is detected from.
SAMPLE_BYTES = 64 * 1024

_READ_CHUNK_BYTES = 1024 * 1024
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# The five byte values that cp1252 leaves undefined; Python's cp1252 codec rejects them.
_CP1252_UNDEFINED = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")


class EncodingDetector:
    """Decide between UTF-8 (with or without a byte order mark) and cp1252, chunk by chunk.

    `feed` and `encoding` raise InvalidInput naming `field` for binary input (a NUL byte),
    UTF-16 text, and bytes that are valid in neither encoding.
    """

    def __init__(self, field: str) -> None:
        self._field = field
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._size = 0
        self._has_bom = False
        self._utf8_error: int | None = None  # offset of the first byte that is not UTF-8
        self._cp1252_error: int | None = None  # offset of the first byte undefined in cp1252
        self._has_text = False  # whether a byte other than whitespace or the BOM was seen

    @property
    def size(self) -> int:
        """Number of bytes fed so far."""
        return self._size

    @property
    def has_text(self) -> bool:
        return self._has_text

    def feed(self, chunk: bytes) -> None:
        if self._size == 0:
            self._check_start(chunk)
        nul = chunk.find(b"\x00")
        if nul >= 0:
            raise InvalidInput(
                self._field,
                f"contains a NUL byte at offset {self._size + nul}, so it is a binary file, "
                "not CSV text; send a text file in UTF-8 or cp1252",
            )
        if self._utf8_error is None:
            self._decode_utf8(chunk, final=False)
        if self._cp1252_error is None:
            undefined = _CP1252_UNDEFINED.search(chunk)
            if undefined is not None:
                self._cp1252_error = self._size + undefined.start()
        if not self._has_text:
            skip = len(codecs.BOM_UTF8) if self._size == 0 and self._has_bom else 0
            self._has_text = bool(chunk[skip:].strip())
        self._size += len(chunk)

    def encoding(self, *, final: bool) -> str:
        """Return `utf-8-sig`, `utf-8` or `cp1252` for the bytes fed so far.

        With `final`, the input has ended, so a multi-byte sequence cut off at the end is an
        error. Call it with `final` once, after the last chunk.
        """
        if final and self._utf8_error is None:
            self._decode_utf8(b"", final=True)
        if self._utf8_error is None:
            return "utf-8-sig" if self._has_bom else "utf-8"
        if self._has_bom:
            raise InvalidInput(
                self._field,
                "starts with a UTF-8 byte order mark, but the byte at offset "
                f"{self._utf8_error} is not valid UTF-8; save the file as UTF-8 again",
            )
        if self._cp1252_error is not None:
            raise InvalidInput(
                self._field,
                f"is neither UTF-8 nor cp1252 text: the byte at offset {self._utf8_error} is "
                f"not valid UTF-8 and the byte at offset {self._cp1252_error} is undefined in "
                "cp1252; save the file as UTF-8",
            )
        return "cp1252"

    def _check_start(self, chunk: bytes) -> None:
        if chunk.startswith(_UTF16_BOMS):
            raise InvalidInput(
                self._field,
                "is UTF-16 text (it starts with a UTF-16 byte order mark); save it as UTF-8",
            )
        self._has_bom = chunk.startswith(codecs.BOM_UTF8)

    def _decode_utf8(self, chunk: bytes, *, final: bool) -> None:
        # The decoder keeps an incomplete multi-byte sequence from the previous chunk, and an
        # error's `start` counts from the first of those bytes.
        pending = len(self._utf8.getstate()[0])
        try:
            self._utf8.decode(chunk, final=final)
        except UnicodeDecodeError as error:
            self._utf8_error = self._size - pending + error.start


def check_sample(sample: bytes, *, complete: bool, field: str) -> str:
    """Return the likely encoding of input that starts with `sample`, or raise InvalidInput.

    This is the cheap look before a job is accepted. When `complete` is true, `sample` is the
    whole input, so an empty or whitespace-only input is rejected here too.
    """
    if not sample:
        raise InvalidInput(field, "is empty; send CSV text that starts with a header row")
    detector = EncodingDetector(field)
    detector.feed(sample)
    encoding = detector.encoding(final=complete)
    if complete and not detector.has_text:
        raise InvalidInput(
            field, "contains only whitespace; send CSV text that starts with a header row"
        )
    return encoding


@dataclass(frozen=True)
class ScannedInput:
    """The encoding, size and text sample of a stored input, found by the encoding pass."""

    encoding: str
    size: int  # in bytes
    sample: str  # the decoded start of the text, at most SAMPLE_BYTES of input

    @property
    def sample_is_complete(self) -> bool:
        return self.size <= SAMPLE_BYTES


def scan_input(stream: BinaryIO, field: str, checkpoint: Callable[[], None]) -> ScannedInput:
    """Read a whole input once to detect its encoding; call `checkpoint` before each chunk."""
    detector = EncodingDetector(field)
    head = b""
    while True:
        checkpoint()
        chunk = stream.read(_READ_CHUNK_BYTES)
        if not chunk:
            break
        detector.feed(chunk)
        if len(head) < SAMPLE_BYTES:
            head += chunk[: SAMPLE_BYTES - len(head)]
    if detector.size == 0:
        raise InvalidInput(field, "is empty; send CSV text that starts with a header row")
    encoding = detector.encoding(final=True)
    if not detector.has_text:
        raise InvalidInput(
            field, "contains only whitespace; send CSV text that starts with a header row"
        )
    # Not final: the sample may end inside a multi-byte character, which is then left out.
    sample = codecs.getincrementaldecoder(encoding)().decode(head, final=False)
    return ScannedInput(encoding=encoding, size=detector.size, sample=sample)
