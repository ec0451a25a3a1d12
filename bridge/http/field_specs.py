"""Typed declarations of request fields: each one checks a value AND describes itself as JSON Schema.

A route declares its body once (bridge/http/route_bodies.py); the route validates with that
declaration and the OpenAPI document (bridge/http/openapi.py) is generated from it, so the spec
and the server cannot disagree. Checks follow JSON Schema's meaning where the two could differ
(``2.0`` is an integer; lengths count code points; ``pattern`` is searched, not anchored).

Optional fields accept ``null`` as "absent" (the predecessor's clients send it), so their
schema is ``[<type>, "null"]``; required fields refuse ``null``. Violations are 422 ``validation_error``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.http.errors import VALIDATION_ERROR, ApiError
from bridge.quoting import quote

# at least one character that is whitespace neither to Python (str.isspace) nor to JSON Schema's
# ECMA-262 regexes: spelled out, so that both engines read the pattern alike
_NONBLANK = r"[^\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"


def invalid(name: str, expected: str, value: Any) -> ApiError:
    return ApiError(422, VALIDATION_ERROR, f"{name}: expected {expected}, got {quote(value)}")


class FieldSpec(Protocol):
    @property
    def required(self) -> bool:
        """A required field refuses absence and ``null``."""

    def check(self, name: str, value: Any) -> Any:
        """A present, non-null value -> the value the route uses (422 when it violates the schema)."""

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of a present, non-null value."""


def _with_null(schema: dict[str, Any]) -> dict[str, Any]:
    out = {**schema, "type": [schema["type"], "null"]}
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


@dataclass(frozen=True)
class TextField:
    max_chars: int
    min_chars: int = 0
    required: bool = False
    nonblank: bool = False  # must contain a character that is not whitespace
    description: str = ""

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise invalid(name, "a string", value)
        if len(value) > self.max_chars:
            raise ApiError(422, VALIDATION_ERROR, f"{name}: longer than {self.max_chars} characters")
        if len(value) < self.min_chars:
            raise ApiError(422, VALIDATION_ERROR, f"{name}: shorter than {self.min_chars} characters")
        if self.nonblank and not re.search(_NONBLANK, value):
            raise ApiError(422, VALIDATION_ERROR, f"{name}: required (not blank)")
        return value

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "maxLength": self.max_chars}
        if self.min_chars:
            schema["minLength"] = self.min_chars
        if self.nonblank:
            schema["pattern"] = _NONBLANK
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True)
class PatternField:
    """A string matching ``pattern`` (searched, as JSON Schema does); the route reads its content
    further (e.g. a data URI's base64 image), where failures are 400/413, not schema violations."""

    pattern: str
    required: bool = False
    description: str = ""
    example: str | None = None
    format: str | None = None  # a name for tools (e.g. to generate real images for "data-uri")
    status: int = 422  # 400 where the predecessor answered a malformed value with 400
    code: str = VALIDATION_ERROR

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise invalid(name, "a string", value)
        if not re.search(self.pattern, value):
            expected = f"a string matching {self.pattern!r} ({self.description})"
            raise ApiError(self.status, self.code, f"{name}: expected {expected}, got {quote(value)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "pattern": self.pattern, "description": self.description}
        if self.example is not None:
            schema["examples"] = [self.example]
        if self.format is not None:
            schema["format"] = self.format
        return schema


@dataclass(frozen=True)
class ChoiceField:
    choices: tuple[str, ...]
    default: str
    required: bool = False

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise invalid(name, f"one of {list(self.choices)}", value)
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.choices), "default": self.default}


@dataclass(frozen=True)
class FlagField:
    default: bool
    required: bool = False

    def check(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise invalid(name, "true or false", value)
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "boolean", "default": self.default}


@dataclass(frozen=True)
class NumberField:
    low: float
    high: float
    integer: bool = False
    low_exclusive: bool = False
    required: bool = False

    def check(self, name: str, value: Any) -> float | int:
        kind = "an integer" if self.integer else "a number"
        low = f"({self.low:g}" if self.low_exclusive else f"[{self.low:g}"
        expected = f"{kind} in {low}, {self.high:g}]"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(name, expected, value)
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid(name, expected, value)
        if self.integer and isinstance(value, float):
            if not value.is_integer():  # JSON Schema: 2.0 is an integer, 2.5 is not
                raise invalid(name, expected, value)
            value = int(value)
        above = value > self.low if self.low_exclusive else value >= self.low
        if not (above and value <= self.high):
            raise invalid(name, expected, value)
        return value

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer" if self.integer else "number", "maximum": self.high}
        schema["exclusiveMinimum" if self.low_exclusive else "minimum"] = self.low
        return schema


@dataclass(frozen=True)
class NumberListField:
    length: int
    item: NumberField
    required: bool = False
    description: str = ""

    def check(self, name: str, value: Any) -> list[float | int]:
        if not isinstance(value, list) or len(value) != self.length:
            raise invalid(name, f"a list of {self.length} numbers", value)
        return [self.item.check(f"{name}[{i}]", v) for i, v in enumerate(value)]

    def json_schema(self) -> dict[str, Any]:
        schema = {"type": "array", "items": self.item.json_schema(), "minItems": self.length, "maxItems": self.length}
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True)
class ObjectSpec:
    """A JSON object: declared keys are checked, others ignored (``additionalProperties`` allowed)."""

    fields: Mapping[str, FieldSpec]
    required: bool = False
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)  # filled in when a key is absent or null

    def check(self, name: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise invalid(name, "an object", value)
        out: dict[str, Any] = {}
        prefix = f"{name}." if name else ""
        for key, spec in self.fields.items():
            given = value.get(key)
            if given is None:
                if spec.required:
                    raise ApiError(422, VALIDATION_ERROR, f"{prefix}{key}: required")
                if key in self.defaults:
                    out[key] = self.defaults[key]
                continue
            out[key] = spec.check(prefix + key, given)
        return out

    def json_schema(self) -> dict[str, Any]:
        properties = {key: spec.json_schema() if spec.required else _with_null(spec.json_schema())
                      for key, spec in self.fields.items()}
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        required = [key for key, spec in self.fields.items() if spec.required]
        if required:
            schema["required"] = required
        if self.description:
            schema["description"] = self.description
        return schema

    def validate(self, body: Any) -> dict[str, Any]:
        """A whole request body -> its checked fields (absent optional ones omitted or defaulted)."""
        if not isinstance(body, dict):
            raise ApiError(422, VALIDATION_ERROR, "request body must be a JSON object")
        return self.check("", body)


@dataclass(frozen=True)
class UploadField:
    """A multipart part carrying a file (a part with a filename, or a non-text part's bytes)."""

    required: bool = False
    description: str = ""

    def check(self, name: str, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        file = getattr(value, "file", None)  # aiohttp's web.FileField
        if file is None:
            raise ApiError(422, VALIDATION_ERROR, f"{name}: expected a file upload, got a text field")
        return bytes(file.read())

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "binary", "description": self.description}


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


@dataclass(frozen=True)
class WordFlagField:
    """A form's boolean as a word in any case (as the predecessor's FastAPI read it); empty -> default."""

    true_words: tuple[str, ...]
    false_words: tuple[str, ...]
    default: bool
    required: bool = False

    @property
    def pattern(self) -> str:
        return "^(?:" + "|".join(_any_case(w) for w in (*self.true_words, *self.false_words)) + ")?$"

    def check(self, name: str, value: Any) -> bool | None:
        if not isinstance(value, str):
            raise ApiError(422, VALIDATION_ERROR, f"{name}: expected a text field")
        if not re.search(self.pattern, value):
            raise invalid(name, f"one of {[*self.true_words, *self.false_words]} (any case)", value)
        word = value.strip().lower()  # (Python's ``$`` also admits one final newline)
        if not word:
            return None  # as if absent
        return word in self.true_words

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": self.pattern,
                "description": f"{'/'.join(self.true_words)} or {'/'.join(self.false_words)}, any case; "
                               f"empty: the default ({str(self.default).lower()})"}

    def words_pattern(self, words: tuple[str, ...]) -> str:
        """A pattern for some of the words (for rules over this field)."""
        return "^(?:" + "|".join(_any_case(w) for w in words) + ")$"


class FormRule(Protocol):
    """A rule over several checked fields of a form, with its JSON Schema (an ``allOf`` member)."""

    def check(self, fields: Mapping[str, Any]) -> None:
        """422 when the fields break the rule."""

    def json_schema(self) -> dict[str, Any]:
        """The rule as a JSON Schema over the form object."""


@dataclass(frozen=True)
class FormSpec:
    """A multipart form: text parts are checked by their declared text specs, file parts by UploadField."""

    fields: Mapping[str, FieldSpec]
    rules: tuple[FormRule, ...] = ()

    def validate(self, form: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, spec in self.fields.items():
            given = form.get(key)
            if given is None:
                if spec.required:
                    raise ApiError(422, VALIDATION_ERROR, f"{key}: required")
                continue
            if not isinstance(spec, UploadField) and not isinstance(given, str):
                raise ApiError(422, VALIDATION_ERROR, f"{key}: expected a text field, got a file")
            checked = spec.check(key, given)
            if checked is not None:
                out[key] = checked
        for rule in self.rules:
            rule.check(out)
        return out

    def json_schema(self) -> dict[str, Any]:
        required = [key for key, spec in self.fields.items() if spec.required]
        schema: dict[str, Any] = {"type": "object", "required": required,
                                  "properties": {key: spec.json_schema() for key, spec in self.fields.items()}}
        if self.rules:
            schema["allOf"] = [rule.json_schema() for rule in self.rules]
        return schema

    def encoding(self) -> dict[str, Any]:
        """OpenAPI's per-part encoding: files as octet streams, text parts as text/plain."""
        return {key: {"contentType": "application/octet-stream" if isinstance(spec, UploadField) else "text/plain"}
                for key, spec in self.fields.items()}
