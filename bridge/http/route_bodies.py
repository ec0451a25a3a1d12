"""The request body of every HTTP route, declared once: the routes validate with these and
bridge/http/openapi.py generates the OpenAPI document from them (limits come from the settings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.http.errors import VALIDATION_ERROR, ApiError
from bridge.http.field_specs import (
    ChoiceField,
    FieldSpec,
    FlagField,
    FormSpec,
    NumberField,
    NumberListField,
    ObjectSpec,
    PatternField,
    TextField,
    UploadField,
    WordFlagField,
)
from bridge.http.settings import HttpSettings
from bridge.protocol import (
    CAPTION_LENGTHS,
    OP_ACT,
    OP_CAPTION,
    OP_DETECT,
    OP_POINT,
    OP_QUERY,
    SETTING_RANGES,
    ErrorCode,
)
from vtla_contracts.tactile_layout import FORCE_TORQUE_DIM

MAX_TEXT_CHARS = 2000  # question / object
MAX_REQUEST_ID_CHARS = 200
MAX_SESSION_CHARS = 200
# float32's range, rounded down: a force/torque beyond it cannot be represented by the policy
MAX_ABS_FORCE_TORQUE = 1e38
# data:<mime>;base64,<payload>; the payload's base64 and image are checked after (400 / 413)
DATA_URI_PATTERN = r"^data:[^,]*;base64,"
_PNG_8X8 = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAIUlEQVR42mNgIBUwQqg7IiJwIZU3b"
            "xgYGJhw6SBdgnQAAJX1Awh0zXbYAAAAAElFTkSuQmCC")
# /predict's force_torque text: a JSON list of 6 numbers, each of at most 6 integer digits and a
# positive exponent of at most 30 (so any value fits float32); blank -> no force/torque
_JSON_WS = "[ \\t\\n\\r]*"
_FT_NUMBER = r"-?(?:0|[1-9][0-9]{0,5})(?:\.[0-9]+)?(?:[eE](?:-[0-9]{1,3}|\+?(?:[0-2]?[0-9]|30)))?"
_FT_ITEM = _JSON_WS + _FT_NUMBER + _JSON_WS
FORCE_TORQUE_TEXT_PATTERN = (
    "^" + _JSON_WS + r"(?:\[" + ("," .join([_FT_ITEM] * FORCE_TORQUE_DIM)) + r"\]" + _JSON_WS + ")?$"
)
PREDICT_TRUE_WORDS = ("true", "1", "yes", "on")
PREDICT_FALSE_WORDS = ("false", "0", "no", "off")
USE_DUMMY_TACTILE = WordFlagField(PREDICT_TRUE_WORDS, PREDICT_FALSE_WORDS, default=True)



@dataclass(frozen=True)
class DummyTactileRule:
    """/predict's ``use_dummy_tactile``: true contradicts tactile data sent, false needs some."""

    def check(self, fields: Mapping[str, Any]) -> None:
        sent = "tactile_image" in fields or bool(fields.get("force_torque", "").strip())
        flag = fields.get("use_dummy_tactile")
        if sent and flag is True:
            raise ApiError(422, VALIDATION_ERROR, "use_dummy_tactile=true contradicts the tactile data sent")
        if not sent and flag is False:
            raise ApiError(422, VALIDATION_ERROR, "use_dummy_tactile=false needs a tactile_image file or force_torque")

    def json_schema(self) -> dict[str, Any]:
        # force_torque carries data when it holds a list (its pattern admits a list or blanks only)
        sent = {"anyOf": [{"required": ["tactile_image"]},
                          {"required": ["force_torque"], "properties": {"force_torque": {"pattern": r"\["}}}]}
        none_sent = {"properties": {"tactile_image": False, "force_torque": {"pattern": "^" + _JSON_WS + "$"}}}

        def flag_is(words: tuple[str, ...]) -> dict[str, Any]:
            return {"required": ["use_dummy_tactile"],
                    "properties": {"use_dummy_tactile": {"pattern": USE_DUMMY_TACTILE.words_pattern(words)}}}

        # the allowed combinations (an anyOf, not if/then: schemathesis cannot judge if/then over file parts)
        blank = {"properties": {"use_dummy_tactile": {"pattern": "^$"}}}
        return {"anyOf": [blank,  # absent or blank: any tactile data or none
                          {"allOf": [flag_is(PREDICT_TRUE_WORDS), none_sent]},
                          {"allOf": [flag_is(PREDICT_FALSE_WORDS), sent]}]}


GENERATION_SETTINGS = ObjectSpec(
    {key: NumberField(r.low, r.high, r.integer, r.low_exclusive) for key, r in SETTING_RANGES.items()},
    description="generation settings; other keys are ignored",
)


def image_url_field(required: bool, what: str = "the image") -> PatternField:
    return PatternField(DATA_URI_PATTERN, required=required, example=_PNG_8X8, format="data-uri",
                        status=400, code=ErrorCode.BAD_REQUEST,
                        description=f"{what} as data:<mime>;base64,<data> (JPEG, PNG, WebP, ...; no remote URLs)")


def _v1_common(extra: Mapping[str, FieldSpec]) -> dict[str, FieldSpec]:
    return {
        "image_url": image_url_field(required=True),
        **extra,
        "settings": GENERATION_SETTINGS,
        "request_id": TextField(MAX_REQUEST_ID_CHARS, min_chars=1, description="echoed back; generated when absent"),
    }


def v1_body(op: str, settings: HttpSettings) -> ObjectSpec:
    """The JSON body of ``POST /v1/<op>``."""
    if op == OP_CAPTION:
        extra: dict[str, FieldSpec] = {"length": ChoiceField(CAPTION_LENGTHS, "normal"), "stream": FlagField(False)}
        defaults = {"length": "normal", "stream": False}
    elif op == OP_QUERY:
        extra = {"question": TextField(MAX_TEXT_CHARS, required=True, nonblank=True), "stream": FlagField(False)}
        defaults = {"stream": False}
    elif op in (OP_DETECT, OP_POINT):
        extra = {"object": TextField(MAX_TEXT_CHARS, required=True, nonblank=True)}
        defaults = {}
    elif op == OP_ACT:
        extra = {
            "instruction": TextField(settings.max_instruction_chars),
            "force_torque": NumberListField(FORCE_TORQUE_DIM, NumberField(-MAX_ABS_FORCE_TORQUE, MAX_ABS_FORCE_TORQUE),
                                            description="Fx, Fy, Fz (N), Tx, Ty, Tz (N m)"),
            "tactile_image_url": image_url_field(required=False, what="the tactile sensor's image"),
            "session": TextField(MAX_SESSION_CHARS, description="a session key (stateful policies)"),
        }
        defaults = {}
    else:
        raise ValueError(f"no /v1 route for op {op!r}")
    return ObjectSpec(_v1_common(extra), defaults=defaults)


def predict_form(settings: HttpSettings) -> FormSpec:
    """The multipart form of ``POST /predict`` (the predecessor's field names)."""
    return FormSpec({
        "image": UploadField(required=True, description="the camera image (JPEG, PNG, WebP, ...)"),
        "instruction": TextField(settings.max_instruction_chars),
        "use_dummy_tactile": USE_DUMMY_TACTILE,
        "tactile_image": UploadField(description="the tactile sensor's image"),
        "force_torque": PatternField(FORCE_TORQUE_TEXT_PATTERN,
                                     description=f"a JSON list of {FORCE_TORQUE_DIM} numbers: Fx, Fy, Fz (N), "
                                                 "Tx, Ty, Tz (N m); blank: none"),
    }, rules=(DummyTactileRule(),))
