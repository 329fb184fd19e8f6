"""Error hierarchy. Messages never carry a dataset value."""


class VeilError(Exception):
    """Base class of every error Veil raises on purpose."""


class ProfileError(VeilError, ValueError):
    """A profile is invalid (unknown key, action, tag, option, bad inheritance)."""


class StandardTableError(VeilError, ValueError):
    """The generated DICOM standard tables are missing or inconsistent."""


class KeyFileError(VeilError, ValueError):
    """The secret key is missing, unreadable or too short."""


class DeidError(VeilError):
    """De-identification of one dataset failed; the dataset must not be written."""


class InputError(VeilError):
    """An input file is not a usable DICOM instance (not DICOM, truncated, DICOMDIR...)."""

    def __init__(self, message: str, *, status: str = "failed") -> None:
        super().__init__(message)
        self.status = status
