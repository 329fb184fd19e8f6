"""Load profiles: YAML with line numbers, validation, ``extends`` inheritance."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ProfileError
from pipeline.profile.schema import (
    DEFAULT_PIXEL,
    UNSUPPORTED_OPTIONS,
    DateSettings,
    PixelSettings,
    ProfileDocument,
    Rule,
    TextSettings,
    TrialSettings,
)
from profiles import PROFILE_DIR

DEFAULT_SHIFT_DAYS = (-1095, -1)
#: Free-text tagging settings a profile gets unless it (or a parent) says otherwise.
DEFAULT_TEXT: dict[str, Any] = {"ner": False, "ner_threshold": 0.5}
_SECTIONS = ("dates", "trial", "pixel", "text")
_MAX_DEPTH = 16
Location = tuple[str | int, ...]


class Profile(BaseModel):
    """A profile with ``extends`` resolved: what the compiler consumes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    enabled: bool = True
    compliance: list[str] = Field(default_factory=list)
    options: list[str] = Field(default_factory=list)
    unlisted: str = "keep"
    unlisted_keep: list[str] = Field(default_factory=list)
    residual_sweep: bool = True
    dates: DateSettings = DateSettings(
        shift_min_days=DEFAULT_SHIFT_DAYS[0], shift_max_days=DEFAULT_SHIFT_DAYS[1]
    )
    trial: TrialSettings = TrialSettings()
    pixel: PixelSettings = PixelSettings.model_validate(DEFAULT_PIXEL)
    text: TextSettings = TextSettings.model_validate(DEFAULT_TEXT)
    rules: list[Rule] = Field(default_factory=list)
    rule_origins: list[str] = Field(default_factory=list)
    lineage: list[str] = Field(default_factory=list)
    source: str = ""
    trial_mapping_sha256: str | None = None

    @property
    def content_hash(self) -> str:
        """sha256 of everything that changes output (not where the file lives)."""
        data = self.model_dump(mode="json", exclude={"source"})
        data["trial"] = {k: v for k, v in data["trial"].items() if k != "mapping_csv"}
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_yaml(self) -> str:
        """Return the resolved profile as YAML (what ``veil profiles show`` prints)."""
        data = self.model_dump(
            mode="json", exclude={"source", "trial_mapping_sha256", "lineage", "rule_origins"},
            exclude_none=True,
        )
        data["rules"] = [{k: v for k, v in rule.items() if v is not None} for rule in data["rules"]]
        header = f"# resolved from: {' <- '.join(reversed(self.lineage))}\n"
        body = yaml.safe_dump({"schema_version": 1, **data}, sort_keys=False, allow_unicode=True)
        return header + body


def _read_yaml(path: Path) -> tuple[Any, dict[Location, int]]:
    """Parse YAML, returning the data and the line of every mapping key / list item."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ProfileError(f"{path}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if node is None:
        raise ProfileError(f"{path}:1: empty profile")
    lines: dict[Location, int] = {}
    return _construct(node, (), lines, path), lines


def _construct(node: yaml.Node, loc: Location, lines: dict[Location, int], path: Path) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key_node, yaml.ScalarNode) or not isinstance(key, str):
                raise ProfileError(f"{path}:{key_node.start_mark.line + 1}: keys must be strings")
            if key in result:
                raise ProfileError(f"{path}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
            result[key] = _construct(value_node, (*loc, key), lines, path)
            lines[(*loc, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*loc, i), lines, path) for i, item in enumerate(node.value)]
    return yaml.SafeLoader(yaml.serialize(node)).get_single_data()


def _error(path: Path, exc: ValidationError, lines: dict[Location, int]) -> ProfileError:
    messages = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), 1)
        where = ".".join(str(part) for part in loc) or "profile"
        msg = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        messages.append(f"{path}:{line}: {where}: {msg}")
    return ProfileError("\n".join(messages))


def read_document(path: str | os.PathLike[str]) -> ProfileDocument:
    """Validate one profile file on its own (``veil profiles validate``)."""
    file = Path(path)
    data, lines = _read_yaml(file)
    if not isinstance(data, dict):
        raise ProfileError(f"{file}:1: a profile is a mapping of keys to values")
    try:
        return ProfileDocument.model_validate(data)
    except ValidationError as exc:
        raise _error(file, exc, lines) from exc


def builtin_path(name: str) -> Path:
    """Return the file of a built-in profile, or raise ProfileError."""
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        raise ProfileError(f"unknown profile {name!r}; built-in profiles: {known}")
    return path


def _resolve_ref(ref: str | os.PathLike[str], base: Path | None) -> Path:
    text = os.fspath(ref)
    if text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text:
        path = Path(text)
        if not path.is_absolute() and base is not None:
            path = base / path
        return path.resolve()
    return builtin_path(text)


def _merge(parent: dict[str, Any], doc: ProfileDocument, path: Path) -> dict[str, Any]:
    merged = dict(parent)
    for key in ("description", "enabled", "unlisted", "residual_sweep", "unlisted_keep"):
        value = getattr(doc, key)
        if value is not None:
            merged[key] = value
    merged["name"] = doc.name
    merged["compliance"] = list(dict.fromkeys([*parent.get("compliance", []), *doc.compliance]))
    merged["options"] = list(dict.fromkeys([*parent.get("options", []), *doc.options]))
    merged["rules"] = [*parent.get("rules", []), *doc.rules]
    merged["rule_origins"] = [
        *parent.get("rule_origins", []),
        *(f"{doc.name}#{index + 1}" for index in range(len(doc.rules))),
    ]
    for key in _SECTIONS:
        section = getattr(doc, key)
        if section is not None:
            update = section.model_dump(exclude_none=True)
            if key == "trial" and "mapping_csv" in update:
                update["mapping_csv"] = str((path.parent / update["mapping_csv"]).resolve())
            merged[key] = {**parent.get(key, {}), **update}
    merged["lineage"] = [*parent.get("lineage", []), doc.name]
    return merged


def _load_chain(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path in seen:
        raise ProfileError(f"{path}: 'extends' forms a cycle")
    if len(seen) > _MAX_DEPTH:
        raise ProfileError(f"{path}: 'extends' chain is deeper than {_MAX_DEPTH}")
    doc = read_document(path)
    parent: dict[str, Any] = {}
    if doc.extends is not None:
        parent = _load_chain(_resolve_ref(doc.extends, path.parent), (*seen, path))
    return _merge(parent, doc, path)


def _apply_override(data: dict[str, Any], key: str, raw: str) -> None:
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in _SECTIONS or not all(parts):
        raise ProfileError(
            f"cannot set {key!r}: only dates.*, trial.*, pixel.* and text.* settings can be set"
        )
    value = yaml.safe_load(raw) if raw.strip() else None
    if parts == ["trial", "mapping_csv"] and value is not None:
        value = str(Path(str(value)).resolve())
    data[parts[0]] = {**data.get(parts[0], {}), parts[1]: value}


def load_profile(
    ref: str | os.PathLike[str],
    options: Sequence[str] = (),
    overrides: Mapping[str, str] | None = None,
    *,
    allow_disabled: bool = False,
) -> Profile:
    """Load a built-in profile by name or a profile file, resolved and validated.

    Parameters
    ----------
    ref
        Built-in name (``dicom-basic``) or path to a YAML file.
    options
        Extra PS3.15 options applied on top of the profile's own.
    overrides
        ``section.key`` settings (``trial.mapping_csv``, ``dates.shift_min_days``...).
    allow_disabled
        Load even when the profile is disabled (for ``profiles show``).
    """
    path = _resolve_ref(ref, None)
    data = _load_chain(path, ())
    if options:
        try:
            ProfileDocument.model_validate({"schema_version": 1, "name": "cli", "options": options})
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ProfileError(f"--option: {message}") from exc
        data["options"] = list(dict.fromkeys([*data.get("options", []), *options]))
    for key, raw in (overrides or {}).items():
        _apply_override(data, key, raw)
    data["source"] = str(path)
    low, high = DEFAULT_SHIFT_DAYS
    data["dates"] = {"shift_min_days": low, "shift_max_days": high, **data.get("dates", {})}
    data["pixel"] = {**DEFAULT_PIXEL, **data.get("pixel", {})}
    data["text"] = {**DEFAULT_TEXT, **data.get("text", {})}
    mapping = data.get("trial", {}).get("mapping_csv")
    if mapping:
        try:
            data["trial_mapping_sha256"] = hashlib.sha256(Path(mapping).read_bytes()).hexdigest()
        except OSError as exc:
            raise ProfileError(f"{path}: cannot read trial.mapping_csv: {exc.strerror}") from exc
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{path}: {exc}") from exc
    _check_semantics(profile, path)
    if not profile.enabled and not allow_disabled:
        raise ProfileError(f"{path}: profile {profile.name!r} is disabled (enabled: false)")
    return profile


def _check_semantics(profile: Profile, path: Path) -> None:
    options = set(profile.options)
    unsupported = sorted(options & UNSUPPORTED_OPTIONS)
    if unsupported:
        raise ProfileError(
            f"{path}: option {unsupported[0]!r} (removal of faces and other recognisable "
            "features) is not implemented by this version of Veil; remove the option"
        )
    if {"retain-longitudinal-full-dates", "retain-longitudinal-modified-dates"} <= options:
        raise ProfileError(
            f"{path}: retain-longitudinal-full-dates and retain-longitudinal-modified-dates "
            "exclude each other"
        )
    low, high = profile.dates.shift_min_days, profile.dates.shift_max_days
    if low is None or high is None or low > high:
        raise ProfileError(f"{path}: dates.shift_min_days must be <= dates.shift_max_days")


def list_profiles() -> list[Profile]:
    """Return every built-in profile, resolved (disabled ones included)."""
    return [
        load_profile(path.stem, allow_disabled=True) for path in sorted(PROFILE_DIR.glob("*.yaml"))
    ]


def validate_profile_file(path: str | os.PathLike[str]) -> Profile:
    """Validate a profile file and everything it extends; return it resolved."""
    return load_profile(Path(path), allow_disabled=True)
