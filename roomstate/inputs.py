"""Reading room histories: JSON lines, a JSON array of events, or JSON objects written one
after another (what Synapse's ``admin_cmd export-data`` writes); gzip-compressed or not.

The shape is told from the first line, gzip from its magic bytes: neither depends on the
file's name.  Memory stays bounded whatever the shape: JSON lines are read one line at a
time; the other shapes are decoded value by value from a window over the stream, never
``json.load``-ed whole.

:func:`read_values` yields ``(line, which, value)``: the line where a value starts; which
value it is where a line may hold several (``"array element 3"``, ``"object 3"``,
counted from 0; ``None`` for JSON lines); and the decoded value, or a :class:`Bad` that
says why a line is not JSON (JSON lines only: the next line starts afresh).  A fault that ends the stream (a truncated gzip file, an I/O error, broken JSON
in a shape without line boundaries) raises :class:`InputError` naming the line.
"""
from __future__ import annotations

import codecs
import gzip
import io
import json
import re
import sys
import zlib
from typing import IO, Any, Iterator, Optional, Tuple

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20
# One JSON value (an event) larger than this is refused rather than buffered: Matrix
# caps a PDU at 64 KiB, so this leaves room for any client-format extras.
MAX_VALUE_CHARS = 64 << 20

_READ_ERRORS = (OSError, EOFError, zlib.error)
_WS = re.compile(r"[ \t\n\r]*")
_BOM = "\ufeff"
# A decode error this close to the window's end may only mean the value goes on.
_NEAR_END = 16


class InputError(Exception):
    """The input cannot be read on from ``line``: ``reason`` says why."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"{line}: {reason}")
        self.line = line
        self.reason = reason


class Bad:
    """A line that is not JSON, and why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


Item = Tuple[int, Optional[str], Any]


class _Rejoined(io.RawIOBase):
    """A stream whose first bytes were read already (to look at them): those, then the rest."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def decompressed(raw: IO[bytes]) -> IO[bytes]:
    """``raw`` itself, or its gzip-decompressed content when it starts with gzip's magic bytes."""
    if raw.seekable():
        head = raw.read(2)
        raw.seek(0)
        stream: IO[bytes] = raw
    else:  # a pipe: the bytes looked at are handed back in front of the rest
        head = raw.read(2)
        stream = io.BufferedReader(_Rejoined(head, raw), CHUNK)  # type: ignore[arg-type]
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=stream, mode="rb")
    return stream


def is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def json_error(line: bytes) -> str:
    """Why a line is not JSON, with the column (the line's own, not the file's)."""
    try:
        json.loads(line.rstrip(b"\r\n").decode("utf-8"))
    except UnicodeDecodeError as exc:
        return f"not UTF-8: byte {exc.start + 1} is {line[exc.start]:#04x}"
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} at column {exc.colno}"
    except _VALUE_ERRORS as exc:
        return value_error(exc)
    return "not valid JSON"


#: What json.loads raises besides JSONDecodeError: nesting deeper than the interpreter's
#: stack (RecursionError) and integers of more digits than Python converts (ValueError).
_VALUE_ERRORS = (RecursionError, ValueError)


def value_error(exc: BaseException) -> str:
    """The reason for a JSON value that parses but that Python will not make."""
    if isinstance(exc, RecursionError):
        return "not accepted: JSON nested too deeply"
    if "integer string conversion" in str(exc):
        return f"not accepted: an integer of more than {sys.get_int_max_str_digits():,} digits"
    return f"not valid JSON: {exc}"  # only if the first parse failed for a reason this one does not see


def read_values(f: IO[bytes]) -> Iterator[Item]:
    """The values of a binary stream, whatever its shape (see the module's docstring)."""
    line_no = 0
    first = b""
    try:
        for first in iter(lambda: f.readline(CHUNK), b""):
            line_no += 1
            if first.strip():
                break
        else:
            return
        start = first.lstrip().lstrip(_BOM.encode()).lstrip()
        if start[:1] == b"[":
            yield from _Window(f, first, line_no).array()
            return
        if start[:1] == b"{" and _continues(first):
            yield from _Window(f, first, line_no).objects()
            return
        loads = json.loads
        for line_no, line in enumerate(_chain(first, f), line_no):
            try:
                value = loads(line)
            except _VALUE_ERRORS:  # JSONDecodeError, UnicodeDecodeError, too deep, too many digits
                if line.strip():
                    yield line_no, None, Bad(json_error(line))
            else:
                yield line_no, None, value
    except _READ_ERRORS as exc:
        raise InputError(line_no + 1, f"cannot read: {exc}") from None


def _chain(first: bytes, f: IO[bytes]) -> Iterator[bytes]:
    yield first
    yield from f


def _continues(first: bytes) -> bool:
    """True when the first line starting with ``{`` is not one whole JSON value: its object
    goes on over the next lines, or another value follows it on the same line."""
    if not first.endswith(b"\n"):
        return True  # no newline within CHUNK: one long line of objects
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc.msg == "Extra data" or len(text.rstrip()) - exc.pos <= _NEAR_END
    except _VALUE_ERRORS:
        return False  # one whole line, which the line reader reports
    return False


class _Window:
    """Decodes JSON values one by one from a window that slides over the stream."""

    def __init__(self, f: IO[bytes], first: bytes, line_no: int) -> None:
        self._f = f
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._raw_decode = json.JSONDecoder().raw_decode
        self._eof = False
        self.line = line_no  # the line at ``pos``
        self.buf = ""
        self.pos = 0
        self._append(first)
        if self.buf.startswith(_BOM, _WS.match(self.buf).end()):
            self.buf = self.buf.replace(_BOM, "", 1)

    # -- the shapes ----------------------------------------------------------------
    def objects(self) -> Iterator[Item]:
        """Values one after another, separated by nothing or by whitespace."""
        index = 0
        while self._skip_ws():
            line = self.line
            yield line, f"object {index}", self._value()
            index += 1

    def array(self) -> Iterator[Item]:
        """The elements of one top-level array."""
        self._skip_ws()
        self._advance(self.pos + 1)  # the "["
        index = 0
        if self._skip_ws() == "]":
            self._advance(self.pos + 1)
        else:
            while True:
                if not self._skip_ws():
                    raise InputError(self.line, "the array is not closed (the input ends inside it)")
                line = self.line
                yield line, f"array element {index}", self._value()
                index += 1
                after = self._skip_ws()
                if after == ",":
                    self._advance(self.pos + 1)
                elif after == "]":
                    self._advance(self.pos + 1)
                    break
                elif not after:
                    raise InputError(self.line, "the array is not closed (the input ends inside it)")
                else:
                    raise InputError(self.line, f"expected ',' or ']' after array element {index - 1}, found {after!r}")
        if self._skip_ws():
            raise InputError(self.line, "more data after the end of the top-level array")

    # -- the window --------------------------------------------------------------
    def _value(self) -> Any:
        while True:
            try:
                value, end = self._raw_decode(self.buf, self.pos)
            except _VALUE_ERRORS as exc:
                if not isinstance(exc, json.JSONDecodeError):
                    raise InputError(self.line, value_error(exc)) from None
                cut = len(self.buf) - exc.pos <= _NEAR_END or exc.msg.startswith("Unterminated string")
                if cut and not self._eof and len(self.buf) - self.pos <= MAX_VALUE_CHARS:
                    self._read()
                    continue
                if not self._eof and len(self.buf) - self.pos > MAX_VALUE_CHARS:
                    raise InputError(self.line, f"a JSON value longer than {MAX_VALUE_CHARS:,} characters") from None
                line = self.line + self.buf.count("\n", self.pos, exc.pos)
                raise InputError(line, f"not valid JSON: {exc.msg}") from None
            self._advance(end)
            return value

    def _skip_ws(self) -> str:
        """Skip whitespace; the next character, or "" at the end of the input."""
        while True:
            self._advance(_WS.match(self.buf, self.pos).end())
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if self._eof:
                return ""
            self._read()

    def _advance(self, end: int) -> None:
        self.line += self.buf.count("\n", self.pos, end)
        self.pos = end

    def _read(self) -> None:
        data = self._f.read(CHUNK)
        if not data:
            self._eof = True
        self._append(data)

    def _append(self, data: bytes) -> None:
        try:
            text = self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            line = self.line + self.buf.count("\n", self.pos) + data[: max(0, exc.start)].count(b"\n")
            raise InputError(line, f"not UTF-8: {exc.reason}") from None
        if self.pos > CHUNK:  # drop what was decoded already
            self.buf = self.buf[self.pos:]
            self.pos = 0
        self.buf += text
