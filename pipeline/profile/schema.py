"""Pydantic models of a profile file (schema_version 1). Unknown keys are errors."""

from __future__ import annotations

import string
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from pipeline.selectors import parse_selector

SCHEMA_VERSION = 1

#: Actions a rule may name; each is described by its handler in ``pipeline.actions``.
RULE_ACTIONS = (
    "drop", "empty", "dummy", "keep", "clean", "uid-remap", "hash", "replace", "date-shift",
    "generalize",
)
#: Fields a ``replace`` template may use.
TEMPLATE_FIELDS = frozenset({"pseudo_id", "subject_id", "site_id", "keyword"})
#: Options this version does not implement (face/feature removal needs its own models).
UNSUPPORTED_OPTIONS = frozenset({"clean-recognizable-visual-features"})
#: Text-region detectors a profile can choose (``pixel.detector``).
#: ``ppocr-v4+veil-text-detector`` is PP-OCRv4 with ours as a second opinion
#: (:class:`pipeline.pixel.ensemble.UnionDetector`).
TEXT_DETECTORS = ("ppocr-v4", "veil-text-detector", "ppocr-v4+veil-text-detector")
#: PHI entity types a pixel finding can have (see pipeline.text.spans.ENTITIES).
PIXEL_ENTITIES = (
    "NAME", "ID", "DATE", "AGE", "INSTITUTION", "LOCATION", "PHONE", "EMAIL", "URL", "OTHER",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """One tag-level rule: a selector and the action applied to what it selects."""

    select: str
    action: str
    value: str | None = None
    length: int | None = Field(default=None, ge=4, le=64)
    band_years: int | None = Field(default=None, ge=1, le=50)
    max_age: int | None = Field(default=None, ge=1, le=150)
    granularity: Literal["year", "month"] | None = None
    note: str | None = None

    @field_validator("select")
    @classmethod
    def _selector(cls, value: str) -> str:
        parse_selector(value)
        return value

    @field_validator("action")
    @classmethod
    def _action(cls, value: str) -> str:
        if value not in RULE_ACTIONS:
            raise ValueError(f"unknown action {value!r}; expected one of {', '.join(RULE_ACTIONS)}")
        return value

    @model_validator(mode="after")
    def _parameters(self) -> Rule:
        allowed = {
            "replace": {"value"},
            "hash": {"length"},
            "generalize": {"band_years", "max_age", "granularity"},
        }.get(self.action, set())
        for field in ("value", "length", "band_years", "max_age", "granularity"):
            if getattr(self, field) is not None and field not in allowed:
                raise ValueError(f"parameter {field!r} does not apply to action {self.action!r}")
        if self.action == "replace":
            if self.value is None:
                raise ValueError("action 'replace' needs a 'value'")
            check_template(self.value)
        return self


def check_template(template: str) -> None:
    """Raise ValueError if a replace template uses an unknown or malformed field."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"malformed template: {exc}") from exc
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(
                f"unknown template field {{{field}}}; expected one of "
                + ", ".join(sorted(TEMPLATE_FIELDS))
            )


class DateSettings(_Strict):
    """Per-patient date shift range, in days (the offset is keyed and deterministic)."""

    shift_min_days: int | None = Field(default=None, ge=-36500, le=36500)
    shift_max_days: int | None = Field(default=None, ge=-36500, le=36500)


class TrialSettings(_Strict):
    """Clinical trial de-identification: subject and site IDs from a mapping CSV."""

    mapping_csv: str | None = None
    patient_id_column: str | None = None
    subject_id_column: str | None = None
    site_id_column: str | None = None
    site_name_column: str | None = None
    sponsor_name: str | None = Field(default=None, max_length=64)
    protocol_id: str | None = Field(default=None, max_length=64)
    protocol_name: str | None = Field(default=None, max_length=64)


def _check_selector(value: str) -> str:
    parse_selector(value)
    return value


def _check_option(value: str) -> str:
    from pipeline.standard import options as standard_options

    known = [name for name in standard_options() if name != "basic"]
    if value not in known:
        raise ValueError(f"unknown option {value!r}; expected one of {', '.join(known)}")
    return value


class RegionRule(_Strict):
    """A fixed region to blank on images of a known device (like CTP's pixel scripts).

    Every given criterion must match (case-insensitive for strings); boxes are
    ``[x0, y0, x1, y1]`` in stored pixels, inclusive-exclusive, applied to every frame.
    """

    modality: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    rows: int | None = Field(default=None, ge=1)
    columns: int | None = Field(default=None, ge=1)
    boxes: list[tuple[int, int, int, int]] = Field(min_length=1)
    note: str | None = None

    @model_validator(mode="after")
    def _boxes(self) -> RegionRule:
        for x0, y0, x1, y1 in self.boxes:
            if not (0 <= x0 < x1 and 0 <= y0 < y1):
                raise ValueError("a region box needs 0 <= x0 < x1 and 0 <= y0 < y1")
        return self


#: Pixel settings a profile gets unless it (or a parent) says otherwise (the loader fills
#: them in; :meth:`PixelSettings.value` reads them for settings built directly). The
#: margin is one stored pixel around the ink-tight box (see
#: ``pipeline.pixel.frames.tighten``): 2 doubled the redacted area outside the text on
#: the synthetic corpus (1.03% against 0.66% of the image) and found no more text
#: (recall and re-OCR leaks equal).
DEFAULT_PIXEL: dict[str, Any] = {
    "mode": "phi-only", "margin": 1, "fill": "min", "review_threshold": 0.8, "regions": [],
    "detector": "ppocr-v4+veil-text-detector", "read_cache": 4096, "follow_lines": True,
    "panel_pass": True,
}


class PixelSettings(_Strict):
    """Burned-in text: detection, PHI decision and redaction (option clean-pixel-data)."""

    mode: Literal["phi-only", "all-text", "none"] | None = None
    det_threshold: float | None = Field(default=None, gt=0, lt=1)
    box_threshold: float | None = Field(default=None, gt=0, lt=1)
    margin: int | None = Field(default=None, ge=0, le=64)
    fill: Literal["min", "black", "zero"] | None = None
    entities: list[Literal[PIXEL_ENTITIES]] | None = None  # type: ignore[valid-type]
    review_threshold: float | None = Field(default=None, ge=0, le=1)
    regions: list[RegionRule] | None = None
    detector: Literal[TEXT_DETECTORS] | None = None  # type: ignore[valid-type]
    read_cache: int | None = Field(default=None, ge=0, le=1_000_000)
    follow_lines: bool | None = None
    panel_pass: bool | None = None

    def value(self, name: str) -> Any:
        """The setting ``name``, or the default a loaded profile gets (``DEFAULT_PIXEL``)."""
        if name not in DEFAULT_PIXEL:
            raise KeyError(name)
        found = getattr(self, name)
        return DEFAULT_PIXEL[name] if found is None else found


class TextSettings(_Strict):
    """Free-text PHI tagging: the transformer NER model beside the rules."""

    ner: bool | None = None
    ner_threshold: float | None = Field(default=None, gt=0, lt=1)


class ProfileDocument(_Strict):
    """One profile file as written, before ``extends`` is resolved."""

    schema_version: int
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=40)
    description: str | None = None
    extends: str | None = None
    enabled: bool | None = None
    compliance: list[str] = Field(default_factory=list)
    options: list[Annotated[str, AfterValidator(_check_option)]] = Field(default_factory=list)
    unlisted: Literal["keep", "remove"] | None = None
    unlisted_keep: list[Annotated[str, AfterValidator(_check_selector)]] | None = None
    residual_sweep: bool | None = None
    dates: DateSettings | None = None
    trial: TrialSettings | None = None
    pixel: PixelSettings | None = None
    text: TextSettings | None = None
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("schema_version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(
                f"unsupported schema_version {value}; this Veil reads {SCHEMA_VERSION}"
            )
        return value

