"""The README documents what the code declares."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.actions import describe_actions
from pipeline.profile.schema import RULE_ACTIONS
from pipeline.standard import options

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_action_table_matches_the_handlers_descriptions():
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| (.+) \|$", README, flags=re.M))
    assert rows == describe_actions()


def test_every_rule_action_has_a_handler_and_every_handler_is_a_rule_action():
    assert set(RULE_ACTIONS) == set(describe_actions())


def test_readme_names_every_option():
    for name in options():
        if name != "basic":
            assert f"`{name}`" in README, name


def test_readme_gives_the_two_setup_commands():
    assert "make demo" in README and "make test" in README
