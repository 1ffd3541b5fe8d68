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
# A well-formed UTF-8 sequence of two to four bytes. Text in cp1252 rarely contains one, so a
# file with both these and bytes that are not UTF-8 mixes the two encodings.
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)

# The decoding error handler for files that mix UTF-8 and cp1252: each byte sequence that is
# not UTF-8 is read as cp1252 instead (an undefined cp1252 byte becomes U+FFFD).
MIXED_ERRORS = "backburner-cp1252-fallback"


def _read_as_cp1252(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return bytes(bad).decode("cp1252", errors="replace"), error.end


codecs.register_error(MIXED_ERRORS, _read_as_cp1252)


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
        self._utf8_error_line: int | None = None  # its line, counted from 1
        self._cp1252_error: int | None = None  # offset of the first byte undefined in cp1252
        self._has_multibyte_utf8 = False  # whether a well-formed UTF-8 sequence was seen
        self._newlines = 0  # line feeds in the bytes fed so far
        self._has_text = False  # whether a byte other than whitespace or the BOM was seen

    @property
    def size(self) -> int:
        """Number of bytes fed so far."""
        return self._size

    @property
    def has_text(self) -> bool:
        return self._has_text

    @property
    def mixed_from_line(self) -> int | None:
        """Return the line of the first byte that is not UTF-8 in a file that is mostly UTF-8.

        A file is taken to mix UTF-8 and cp1252 when it has a byte order mark or a well-formed
        multi-byte UTF-8 sequence, and also bytes that are not UTF-8. Such a file is read as
        UTF-8 with `MIXED_ERRORS`; reading it all as cp1252 would garble its UTF-8 text.
        """
        if self._utf8_error is None:
            return None
        if self._has_bom or self._has_multibyte_utf8:
            return self._utf8_error_line
        return None

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
            if self._utf8_error is not None:
                before = chunk[: max(0, self._utf8_error - self._size)]
                self._utf8_error_line = self._newlines + before.count(b"\n") + 1
        if not self._has_multibyte_utf8:
            self._has_multibyte_utf8 = _UTF8_MULTIBYTE.search(chunk) is not None
        self._newlines += chunk.count(b"\n")
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
            if self._utf8_error is not None:
                self._utf8_error_line = self._newlines + 1
        if self._utf8_error is None or self.mixed_from_line is not None:
            return "utf-8-sig" if self._has_bom else "utf-8"
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
    mixed_from_line: int | None = None  # see EncodingDetector.mixed_from_line

    @property
    def errors(self) -> str:
        """Return the decoding error handler to read the whole input with."""
        return "strict" if self.mixed_from_line is None else MIXED_ERRORS

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
    mixed = detector.mixed_from_line
    errors = "strict" if mixed is None else MIXED_ERRORS
    # Not final: the sample may end inside a multi-byte character, which is then left out.
    sample = codecs.getincrementaldecoder(encoding)(errors).decode(head, final=False)
    return ScannedInput(encoding=encoding, size=detector.size, sample=sample, mixed_from_line=mixed)
