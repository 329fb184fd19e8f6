"""Profiles: declarative, validated, inheritable de-identification policies."""

from pipeline.profile.compiler import CompiledProfile, Decision, compile_profile
from pipeline.profile.loader import (
    Profile,
    builtin_path,
    list_profiles,
    load_profile,
    read_document,
    validate_profile_file,
)

__all__ = [
    "CompiledProfile",
    "Decision",
    "Profile",
    "builtin_path",
    "compile_profile",
    "list_profiles",
    "load_profile",
    "read_document",
    "validate_profile_file",
]
