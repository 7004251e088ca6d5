"""JSON as TF Serving writes and reads it.

- TF Serving writes predictions, errors and debug strings with rapidjson's PrettyWriter
  (tensorflow_serving/util/json_tensor.cc); `RJWriter` reproduces its layout byte for byte:
  4-space indents, `kFormatSingleLineArray` switched on per row, `, ` inside single-line arrays,
  the closing bracket of a multi-line array on its own line.
- Floats go through json_tensor.cc WriteDecimal(): absl::StrCat's six significant digits, full
  precision (%.9g / %.17g) when that does not round-trip, ".0" added to whole numbers, NaN and
  (-)Infinity as bare words.
- Model status and metadata are protobuf's C++ JSON printer with add_whitespace (1-space
  indents, a newline after the root object; http_rest_api_util.cc ToJsonString()); `proto_json`
  reproduces it.
- Requests are parsed as rapidjson does with kParseNanAndInfFlag|kParseStopWhenDoneFlag:
  members keep their order and duplicates (FindMember finds the first), numbers keep rapidjson's
  int/uint/int64/uint64/double distinction.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

# --- parsed JSON values ------------------------------------------------------------------------


class JObject:
    """A JSON object as rapidjson keeps it: ordered members, duplicates allowed."""

    def __init__(self, members: list[tuple[str, Any]]) -> None:
        self.members = list(members)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JObject) and self.members == other.members

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"JObject({self.members!r})"

    def find(self, key: str) -> tuple[bool, Any]:
        for k, v in self.members:
            if k == key:
                return True, v
        return False, None


_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def _parse_int(text: str) -> int | float:
    value = int(text)
    # rapidjson keeps integers in int64/uint64; anything bigger becomes a double.
    if value < _INT64_MIN or value > _UINT64_MAX:
        return float(text)
    return value


def _parse_constant(name: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


_DECODER = json.JSONDecoder(
    object_pairs_hook=JObject, parse_int=_parse_int, parse_constant=_parse_constant
)
_WS = " \t\n\r"


class JsonParseError(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def _container_at(text: str, pos: int) -> str:
    """Which container is open at pos ('{' or '['), for rapidjson's comma messages."""
    stack: list[str] = []
    in_string = False
    escaped = False
    for ch in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append(ch)
        elif ch in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


# Python's json message (its start) -> rapidjson's GetParseError_En() text, at the same offset.
_PARSE_ERRORS = (
    ("Expecting property name", "Missing a name for object member."),
    ("Expecting ':'", "Missing a colon after a name of object member."),
    ("Invalid control character", "Invalid encoding in string."),
    ("Invalid \\uXXXX", "Incorrect hex digit after \\u escape in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
)


def parse(text: str) -> Any:
    """rapidjson ParseStream<kParseIterativeFlag|kParseNanAndInfFlag|kParseStopWhenDoneFlag>.

    Error texts are rapidjson's GetParseError_En(); the offsets are Python's json module's,
    which can differ by a few characters from rapidjson's.
    """
    start = len(text) - len(text.lstrip(_WS))
    if start == len(text):
        raise JsonParseError("The document is empty.", start)
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        msg = exc.msg
        for prefix, message in _PARSE_ERRORS:
            if msg.startswith(prefix):
                raise JsonParseError(message, exc.pos) from None
        if msg.startswith("Expecting ','"):
            if _container_at(text, exc.pos) == "[":
                raise JsonParseError(
                    "Missing a comma or ']' after an array element.", exc.pos
                ) from None
            raise JsonParseError(
                "Missing a comma or '}' after an object member.", exc.pos
            ) from None
        if msg.startswith("Unterminated string"):
            raise JsonParseError("Missing a closing quotation mark in string.", len(text)) from None
        raise JsonParseError("Invalid value.", exc.pos) from None
    return value


# rapidjson Value type predicates (document.h), on the values parse() returns.
def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31


def is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32


def is_int64(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and _INT64_MIN <= v < 2**63


def is_uint64(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _UINT64_MAX


def type_string(v: Any) -> str:
    """json_tensor.cc JsonTypeString()."""
    if v is None:
        return "Null"
    if v is False:
        return "False"
    if v is True:
        return "True"
    if isinstance(v, JObject):
        return "Object"
    if isinstance(v, list):
        return "Array"
    if isinstance(v, str):
        return "String"
    return "Number"


# --- rapidjson's writer --------------------------------------------------------------------


def _escape(s: str) -> str:
    """rapidjson Writer::WriteString() without kWriteValidateEncodingFlag: raw UTF-8 kept."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20:
            short = {8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(o)
            out.append(short if short else f"\\u00{o:02X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def rapidjson_double(d: float) -> str | None:
    """rapidjson Writer::Double() (Grisu2 + Prettify); None where it refuses (NaN, Inf)."""
    if math.isnan(d) or math.isinf(d):
        return None
    if d == 0:
        return "-0.0" if math.copysign(1.0, d) < 0 else "0.0"
    sign = "-" if d < 0 else ""
    mantissa, _, exponent = repr(abs(d)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    k = (int(exponent) if exponent else 0) - len(frac)
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits = stripped
    length = len(digits)
    kk = length + k

    def exp(e: int) -> str:
        return f"e{'-' if e < 0 else ''}{abs(e)}"

    if k >= 0 and kk <= 21:
        body = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        body = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        body = "0." + "0" * (-kk) + digits
    elif length == 1:
        body = digits + exp(kk - 1)
    else:
        body = digits[0] + "." + digits[1:] + exp(kk - 1)
    return sign + body


def write_decimal(value: float, is_float32: bool) -> str:
    """tensorflow_serving/util/json_tensor.cc WriteDecimal()."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:.6g}"  # absl::StrCat(float|double): six significant digits, %g style
    if is_float32:
        if np.float32(float(text)) != np.float32(value):
            text = f"{value:.9g}"  # max_digits10 for float
    elif float(text) != value:
        text = f"{value:.17g}"  # max_digits10 for double
    if "." not in text and "e" not in text:
        text += ".0"
    return text


class Truncated(Exception):
    """The debug-string writer ran out of room (json_tensor.cc JsonWriterWithLimit)."""


class RJWriter:
    """rapidjson::PrettyWriter<StringBuffer> with its default 4-space indent."""

    def __init__(self, limit: int | None = None) -> None:
        self.out: list[str] = []
        self.size = 0
        self.limit = limit
        self.single_line = False
        self._levels: list[list[Any]] = []  # [in_array, value_count]

    def _put(self, s: str) -> None:
        self.out.append(s)
        self.size += len(s.encode("utf-8", errors="surrogateescape"))

    def _check(self) -> None:
        if self.limit is not None and self.size >= self.limit:
            raise Truncated

    def _indent(self) -> None:
        self._put(" " * (4 * len(self._levels)))

    def _prefix(self) -> None:
        if not self._levels:
            return
        level = self._levels[-1]
        if level[0]:  # in array
            if level[1] > 0:
                self._put(",")
                if self.single_line:
                    self._put(" ")
            if not self.single_line:
                self._put("\n")
                self._indent()
        else:
            if level[1] > 0:
                self._put(",\n" if level[1] % 2 == 0 else ": ")
            else:
                self._put("\n")
            if level[1] % 2 == 0:
                self._indent()
        level[1] += 1

    def _open(self, in_array: bool, bracket: str) -> None:
        self._check()
        self._prefix()
        self._levels.append([in_array, 0])
        self._put(bracket)

    def _close(self, bracket: str, one_line: bool) -> None:
        self._check()
        empty = self._levels.pop()[1] == 0
        if not empty and not one_line:
            self._put("\n")
            self._indent()
        self._put(bracket)

    def start_object(self) -> None:
        self._open(False, "{")

    def end_object(self) -> None:
        self._close("}", one_line=False)  # single_line holds for arrays only

    def start_array(self) -> None:
        self._open(True, "[")

    def end_array(self) -> None:
        self._close("]", one_line=self.single_line)

    def raw(self, text: str) -> None:
        self._check()
        self._prefix()
        self._put(text)

    def string(self, s: str) -> None:
        self.raw(_escape(s))

    key = string

    def text(self) -> str:
        return "".join(self.out)


def write_value(w: RJWriter, v: Any) -> None:
    """rapidjson Value::Accept(writer) for a parsed value."""
    if isinstance(v, JObject):
        w.start_object()
        for k, item in v:
            w.key(k)
            write_value(w, item)
        w.end_object()
    elif isinstance(v, list):
        w.start_array()
        for item in v:
            write_value(w, item)
        w.end_array()
    elif v is None:
        w.raw("null")
    elif v is True:
        w.raw("true")
    elif v is False:
        w.raw("false")
    elif isinstance(v, str):
        w.string(v)
    elif isinstance(v, int):
        w.raw(str(v))
    else:
        text = rapidjson_double(float(v))
        if text is None:
            raise Truncated  # Writer::Double() refuses NaN/Inf: Accept() stops there
        w.raw(text)


def debug_string(v: Any) -> str:
    """json_tensor.cc JsonValueToDebugString(): single-line arrays, cut near 256 bytes."""
    w = RJWriter(limit=256)
    w.single_line = True
    with contextlib.suppress(Truncated):
        write_value(w, v)
    return w.text()


def error_json(message: str) -> str:
    """json_tensor.cc MakeJsonFromStatus(): {"error": message} through PrettyWriter."""
    w = RJWriter()
    w.start_object()
    w.key("error")
    w.string(message)
    w.end_object()
    return w.text()


# --- protobuf's C++ JSON printer -----------------------------------------------------------


def _proto_fields(msg: Any, preserve_names: bool) -> Iterator[tuple[str, Any]]:
    """Field order of TF Serving's JSON output: plain fields by number, then set oneof members.

    That is the order seen in tensorflow_model_server's replies (e.g. model_spec prints name,
    signature_name, version; TensorInfo prints dtype, tensor_shape, name).
    """
    desc = msg.DESCRIPTOR
    plain = sorted((f for f in desc.fields if f.containing_oneof is None), key=lambda f: f.number)
    oneof = sorted(
        (f for f in desc.fields if f.containing_oneof is not None), key=lambda f: f.number
    )
    for f in plain + oneof:
        name = f.name if preserve_names else f.json_name
        if f.containing_oneof is not None:
            if msg.WhichOneof(f.containing_oneof.name) != f.name:
                continue
        elif f.message_type is not None and not f.is_repeated and not msg.HasField(f.name):
            continue  # message fields have presence: printed only when set
        yield name, _proto_value(f, getattr(msg, f.name), preserve_names)


def _is_map(f: Any) -> bool:
    return bool(
        f.message_type is not None and f.message_type.GetOptions().map_entry and f.is_repeated
    )


_WRAPPERS = {
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
    "google.protobuf.FloatValue",
    "google.protobuf.DoubleValue",
}


def _scalar(f: Any, v: Any) -> Any:
    t = f.type
    if t in (f.TYPE_INT64, f.TYPE_UINT64, f.TYPE_SINT64, f.TYPE_FIXED64, f.TYPE_SFIXED64):
        return str(v)
    if t == f.TYPE_ENUM:
        value = f.enum_type.values_by_number.get(v)
        return value.name if value is not None else v
    if t == f.TYPE_BYTES:
        return base64.b64encode(v).decode("ascii")
    if t in (f.TYPE_FLOAT, f.TYPE_DOUBLE):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return float(np.float32(v)) if t == f.TYPE_FLOAT else v
    return v


def _message(m: Any, preserve_names: bool) -> Any:
    full = m.DESCRIPTOR.full_name
    if full in _WRAPPERS:
        return _scalar(m.DESCRIPTOR.fields_by_name["value"], m.value)
    return dict(_proto_fields(m, preserve_names))


def _proto_value(f: Any, v: Any, preserve_names: bool) -> Any:
    if _is_map(f):
        value_field = f.message_type.fields_by_name["value"]
        out = {}
        for k in sorted(v):
            item = v[k]
            out[str(k)] = (
                _message(item, preserve_names)
                if value_field.message_type is not None
                else _scalar(value_field, item)
            )
        return out
    if f.is_repeated:
        if f.message_type is not None:
            return [_message(item, preserve_names) for item in v]
        return [_scalar(f, item) for item in v]
    if f.message_type is not None:
        return _message(v, preserve_names)
    return _scalar(f, v)


def proto_json(msg: Any, preserve_names: bool) -> str:
    """MessageToJsonString(add_whitespace, always_print_fields_with_no_presence)."""
    body = json.dumps(_message(msg, preserve_names), indent=1, ensure_ascii=False)
    return body + "\n"


_B64_CHARS = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def base64_unescape(s: str) -> bytes | None:
    """absl::Base64Unescape(): standard alphabet, padding optional; None when invalid."""
    s = s.strip(" \t\r\n")
    if not _B64_CHARS.fullmatch(s):
        return None
    body = s.rstrip("=")
    if len(body) % 4 == 1:
        return None
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except ValueError:
        return None
