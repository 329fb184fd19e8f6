"""Compile a resolved profile into fast per-tag decisions.

Resolution order for one element (first hit wins):

1. profile rules, most specific first (tag / keyword / private element, then masks,
   then ``VR:``, then ``private``); among equally specific rules the last defined wins;
2. Table E.1-1 with the profile's options applied (exact tag, then masks, then the
   private-attributes row);
3. the profile's ``unlisted`` policy.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ProfileError
from pipeline.profile.loader import Profile
from pipeline.profile.schema import Rule
from pipeline.selectors import Selector, is_private, mask_selector, parse_selector
from pipeline.standard import ConfidentialityTable, confidentiality_table, safe_private_table
from pipeline.standard import options as standard_options

#: Table E.1-1 codes -> rule actions. Combined codes ("X/Z", "Z/D", ...) take the
#: rightmost code: it always keeps the IOD conformant, and every choice removes the value.
CODE_ACTIONS = {
    "X": "drop", "Z": "empty", "D": "dummy", "K": "keep", "C": "clean", "U": "uid-remap",
}
#: Options are applied in this order; a later one overrides an earlier one on the same row,
#: so the more protective wins: a "clean" (C) beats a "retain" (K) of another option (a
#: calibration date kept by retain-device-identity is still shifted under modified dates).
_OPTION_PRECEDENCE = (
    "retain-safe-private", "retain-uids", "retain-device-identity",
    "retain-institution-identity", "retain-patient-characteristics",
    "retain-longitudinal-full-dates", "retain-longitudinal-modified-dates",
    "clean-descriptors", "clean-structured-content", "clean-graphics",
)
DATE_RULE_ACTIONS = frozenset({"date-shift", "generalize"})
TRIAL_FIELDS = frozenset({"subject_id", "site_id"})


@dataclass(frozen=True)
class Decision:
    """What happens to one element, and why (``source`` goes into the report)."""

    action: str
    source: str
    rule: Rule | None = None
    order: int = -1


@dataclass(frozen=True)
class TrialSubject:
    """One row of a clinical-trial mapping CSV."""

    subject_id: str
    site_id: str
    site_name: str


def table_action(code: str) -> str:
    """Map a Table E.1-1 action code (possibly combined) to a rule action."""
    last = code.split("/")[-1].rstrip("*")  # X/Z/U*: the note only limits U to UIDs
    if last not in CODE_ACTIONS:
        raise ProfileError(f"Table E.1-1 action code {code!r} is not understood")
    return CODE_ACTIONS[last]


@dataclass
class CompiledProfile:
    """A profile turned into lookup tables; build it with :func:`compile_profile`."""

    profile: Profile
    exact: dict[int, Decision]
    masks: list[tuple[Selector, Decision]]
    private_default: Decision
    safe_private: frozenset[tuple[int, int, str]]
    rule_tags: dict[int, Decision]
    rule_private: dict[tuple[int, int, str], Decision]
    rule_masks: list[tuple[Selector, Decision]]
    rule_vrs: dict[str, Decision]
    rule_private_all: Decision | None
    unlisted: Decision
    unlisted_keep: list[Selector]
    codes: list[tuple[str, str]]
    temporal: str
    trial: dict[str, TrialSubject] | None
    _cache: dict[tuple[int, str, str | None], Decision] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Profile name."""
        return self.profile.name

    @property
    def content_hash(self) -> str:
        """Content hash of the resolved profile."""
        return self.profile.content_hash

    @property
    def options(self) -> list[str]:
        """PS3.15 options applied."""
        return list(self.profile.options)

    def decide(self, tag: int, vr: str, creator: str | None) -> Decision:
        """Return the decision for one element (cached per tag, VR and creator)."""
        key = (tag, vr, creator)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._resolve(tag, vr, creator)
        return cached

    def _resolve(self, tag: int, vr: str, creator: str | None) -> Decision:
        private = is_private(tag)
        by_tag = self.rule_tags.get(tag)
        by_creator = None
        if private and creator is not None:
            by_creator = self.rule_private.get((tag >> 16, tag & 0xFF, creator.strip()))
        if by_tag is not None or by_creator is not None:
            hits = [hit for hit in (by_tag, by_creator) if hit is not None]
            return max(hits, key=lambda hit: hit.order)
        for selector, decision in reversed(self.rule_masks):
            if selector.matches(tag, vr, creator):
                return decision
        hit = None if private else self.rule_vrs.get(vr)
        if hit is not None:
            return hit
        if private:
            if self.rule_private_all is not None:
                return self.rule_private_all
            if self.private_default.action == "keep-safe":
                safe = creator is not None and (
                    (tag >> 16, tag & 0xFF, creator.strip()) in self.safe_private
                )
                source = self.private_default.source
                return Decision("keep" if safe else "drop", source)
            return self.private_default
        hit = self.exact.get(tag)
        if hit is not None:
            return hit
        for selector, decision in self.masks:
            if selector.matches(tag, vr, creator):
                return decision
        if self.unlisted.action == "drop" and any(
            s.matches(tag, vr, creator) for s in self.unlisted_keep
        ):
            return Decision("keep", "unlisted-keep")
        return self.unlisted


def _table_decisions(
    table: ConfidentialityTable, options: list[str]
) -> tuple[dict[int, Decision], list[tuple[Selector, Decision]], Decision]:
    applied = [name for name in _OPTION_PRECEDENCE if name in options]
    exact: dict[int, Decision] = {}
    masks: list[tuple[Selector, Decision]] = []
    private = Decision("drop", "table:basic")
    for row in table.rows:
        code, source = row.actions.get("basic", ""), "table:basic"
        for name in applied:
            if row.actions.get(name):
                code, source = row.actions[name], f"table:{name}"
        if not code:
            raise ProfileError(f"Table E.1-1 row {row.tag} has no basic profile action")
        if row.pattern == "private":
            if source == "table:retain-safe-private" and code == "C":
                private = Decision("keep-safe", source)
            else:
                private = Decision(table_action(code), source)
        elif "x" in row.pattern:
            decision = Decision(table_action(code), source)
            masks.append((mask_selector(row.tag, row.pattern), decision))
        else:
            exact[int(row.pattern, 16)] = Decision(table_action(code), source)
    return exact, masks, private


def _load_trial(profile: Profile) -> dict[str, TrialSubject] | None:
    settings = profile.trial
    if not settings.mapping_csv:
        return None
    missing = [f"trial.{name}" for name in ("sponsor_name", "protocol_id")
               if not getattr(settings, name)]
    if missing:  # Type 1 in the Clinical Trial Subject Module (PS3.3 C.7.1.3)
        raise ProfileError(f"profile {profile.name!r}: a trial mapping needs {', '.join(missing)}")
    columns = {
        "patient": settings.patient_id_column or "patient_id",
        "subject": settings.subject_id_column or "subject_id",
        "site": settings.site_id_column or "site_id",
        "site_name": settings.site_name_column or "site_name",
    }
    path = Path(settings.mapping_csv)
    subjects: dict[str, TrialSubject] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for k, c in columns.items() if k != "site_name"
                       and c not in (reader.fieldnames or [])]
            if missing:
                raise ProfileError(f"{path}: trial mapping lacks column(s) {', '.join(missing)}")
            for number, row in enumerate(reader, start=2):
                patient = (row[columns["patient"]] or "").strip()
                subject = (row[columns["subject"]] or "").strip()
                if not patient or not subject:
                    raise ProfileError(f"{path}:{number}: empty patient or subject ID")
                if patient in subjects:
                    raise ProfileError(f"{path}:{number}: patient listed twice")
                subjects[patient] = TrialSubject(
                    subject, (row[columns["site"]] or "").strip(),
                    (row.get(columns["site_name"]) or "").strip(),
                )
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read trial mapping: {exc.strerror}") from exc
    return subjects


def compile_profile(profile: Profile) -> CompiledProfile:
    """Compile a resolved profile; raise ProfileError on inconsistencies."""
    table = confidentiality_table()
    exact, masks, private_default = _table_decisions(table, profile.options)
    rule_tags: dict[int, Decision] = {}
    rule_private: dict[tuple[int, int, str], Decision] = {}
    rule_masks: list[tuple[Selector, Decision]] = []
    rule_vrs: dict[str, Decision] = {}
    rule_private_all: Decision | None = None
    trial = _load_trial(profile)
    for index, rule in enumerate(profile.rules):
        selector = parse_selector(rule.select)
        origin = profile.rule_origins[index] if index < len(profile.rule_origins) else "?"
        source = f"rule:{origin}:{rule.select}"
        decision = Decision(rule.action, source, rule, index)
        if rule.action == "replace" and trial is None and any(
            f"{{{name}}}" in (rule.value or "") for name in TRIAL_FIELDS
        ):
            raise ProfileError(
                f"profile {profile.name!r}: rule {rule.select!r} uses a trial field but "
                "trial.mapping_csv is not set (set it in a profile or with "
                "--set trial.mapping_csv=FILE)"
            )
        if selector.kind == "tag":
            rule_tags[selector.tag] = decision
        elif selector.kind == "private-element":
            rule_private[(selector.tag >> 16, selector.tag & 0xFF, selector.creator)] = decision
        elif selector.kind == "mask":
            rule_masks.append((selector, decision))
        elif selector.kind == "vr":
            rule_vrs[selector.vr] = decision
        else:
            rule_private_all = decision
    info = standard_options()
    codes = [(info["basic"].code, info["basic"].meaning)] + [
        (info[name].code, info[name].meaning) for name in info if name in profile.options
    ]
    if "retain-longitudinal-modified-dates" in profile.options or any(
        rule.action in DATE_RULE_ACTIONS for rule in profile.rules
    ):
        temporal = "MODIFIED"
    elif "retain-longitudinal-full-dates" in profile.options:
        temporal = "UNMODIFIED"
    else:
        temporal = "REMOVED"
    safe = frozenset(
        (entry.group, entry.element, entry.creator.strip())
        for entry in safe_private_table().entries
    )
    return CompiledProfile(
        profile=profile,
        exact=exact,
        masks=masks,
        private_default=private_default,
        safe_private=safe,
        rule_tags=rule_tags,
        rule_private=rule_private,
        rule_masks=rule_masks,
        rule_vrs=rule_vrs,
        rule_private_all=rule_private_all,
        unlisted=Decision("drop" if profile.unlisted == "remove" else "keep", "unlisted"),
        unlisted_keep=[parse_selector(text) for text in profile.unlisted_keep],
        codes=codes,
        temporal=temporal,
        trial=trial,
    )
