"""Read one input file as a DICOM instance, or say why it cannot be used.

Every reason raised here is a fixed sentence or an attribute *name*: never a
value read from the file, since values may be PHI.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import warnings
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag
from pydicom.uid import MediaStorageDirectoryStorage

from pipeline.errors import InputError

__all__ = ["read_instance", "withhold_pydicom_log_values"]


_REQUIRED_UIDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GEOMETRY = ("Rows", "Columns", "BitsAllocated")


def read_instance(path: str | os.PathLike[str], data: bytes | None = None) -> Dataset:
    """Read ``path`` as a complete DICOM instance.

    Parameters
    ----------
    path
        File to read.
    data
        The bytes of the regular file ``path`` when the caller has already read them
        (they are then not read again).

    Returns
    -------
    Dataset
        The fully parsed dataset (every raw element converted).

    Raises
    ------
    InputError
        With ``status="skipped"`` for files that are not DICOM instances
        (not DICOM, empty, DICOMDIR) and ``status="failed"`` for DICOM files
        that are broken (truncated, unparsable values, missing UIDs).
    """
    path = Path(path)
    withhold_pydicom_log_values()
    with warnings.catch_warnings():
        # pydicom warnings quote the offending values: never let them out.
        warnings.simplefilter("ignore")
        ds = _parse(path, data)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            _convert_all(meta)  # a broken file meta element fails here too, by its tag
        _check_not_dicomdir(ds)
        _convert_all(ds)
        _check_uids(ds)
        _check_pixel_data(ds)
    return ds


class _TrackingBuffer(io.BytesIO):
    """In-memory file that records the reads pydicom could not satisfy.

    pydicom stops quietly at the end of the data. One empty read at top level
    is the normal end of a file; a partial read, or more than one empty read
    (an unterminated sequence or item), means the file was cut short.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.short_reads = 0
        self.empty_reads = 0

    def read(self, size: int | None = -1, /) -> bytes:
        """Read like :class:`io.BytesIO`, counting short reads."""
        data = super().read(size)
        if size is not None and size > 0:
            if not data:
                self.empty_reads += 1
            elif len(data) < size:
                self.short_reads += 1
        return data

    @property
    def truncated(self) -> bool:
        """Whether the parser ran out of data mid-element or mid-sequence."""
        return self.short_reads > 0 or self.empty_reads > 1


class _WithholdValues(logging.Filter):
    """Drop pydicom's warnings (they quote values); keep errors, without their text."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop or rewrite one record."""
        if record.levelno < logging.ERROR:
            return False
        record.msg = "pydicom reported an error (text withheld: it may quote a value)"
        record.args = ()
        return True


_FILTER = _WithholdValues()


def withhold_pydicom_log_values() -> None:
    """Install (once) the filter that keeps values out of the ``pydicom`` logger.

    pydicom logs invalid values verbatim (``Invalid value for VR DA: '...'``)
    when it reads or validates them; in a de-identification tool those are PHI.
    """
    pydicom_log = logging.getLogger("pydicom")
    if _FILTER not in pydicom_log.filters:
        pydicom_log.addFilter(_FILTER)


def _parse(path: Path, data: bytes | None) -> Dataset:
    """Parse the file; a preamble-less dataset is accepted when it has SOP UIDs."""
    if data is None:
        data = _read(path)
    if not data:
        raise InputError("empty file, not a DICOM file", status="skipped")
    buffer = _TrackingBuffer(data)
    if data[128:132] == b"DICM":
        try:
            ds: Dataset = dcmread(buffer)
        except Exception as exc:
            raise InputError(_parse_failure(exc)) from None
    else:
        ds = _parse_raw(buffer)
    if buffer.truncated:
        raise InputError("truncated or corrupt file (data ends inside an element or sequence)")
    return ds


def _read(path: Path) -> bytes:
    """The bytes of the regular file ``path``."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise InputError("folder that could not be listed")
        if not stat.S_ISREG(mode):
            raise InputError("not a regular file", status="skipped")
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file ({type(exc).__name__})") from None


def _parse_raw(buffer: _TrackingBuffer) -> Dataset:
    """Parse a preamble-less dataset, accepted only if it looks like an instance."""
    forced: Dataset | None
    try:
        forced = dcmread(buffer, force=True)
        looks_like_instance = "SOPClassUID" in forced and "SOPInstanceUID" in forced
    except Exception:
        forced, looks_like_instance = None, False
    if forced is not None and looks_like_instance:
        return forced
    if _is_headless_dicomdir(forced):
        raise InputError("DICOMDIR is an index, not an instance", status="skipped")
    raise InputError("not a DICOM file (no DICM prefix)", status="skipped")


def _is_headless_dicomdir(ds: Dataset | None) -> bool:
    """Whether a forced read produced a directory record sequence."""
    try:
        return ds is not None and "DirectoryRecordSequence" in ds
    except Exception:
        return False


def _parse_failure(exc: BaseException) -> str:
    """Reason for a file with a DICM prefix that pydicom cannot parse."""
    if isinstance(exc, EOFError):
        return "truncated file (unexpected end of data)"
    if isinstance(exc, InvalidDicomError):
        return "invalid DICOM file header"
    return f"cannot parse DICOM file ({type(exc).__name__})"


def _check_not_dicomdir(ds: Dataset) -> None:
    """Reject DICOMDIR (Media Storage Directory) files."""
    meta = getattr(ds, "file_meta", None)
    sop_class = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    if sop_class == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds:
        raise InputError("DICOMDIR is an index, not an instance", status="skipped")


def _convert_all(ds: Dataset) -> None:
    """Convert every raw element, so broken values fail here and not later."""
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
        except Exception as exc:
            raise InputError(f"invalid value in {_tag_str(tag)} ({type(exc).__name__})") from None
        if elem.VR == "SQ":
            for item in elem.value:
                _convert_all(item)


def _check_uids(ds: Dataset) -> None:
    """Require the three instance-identifying UIDs."""
    missing = [kw for kw in _REQUIRED_UIDS if not str(ds.get(kw, "") or "").strip()]
    if missing:
        raise InputError(f"missing required attribute(s): {', '.join(missing)}")


def _check_pixel_data(ds: Dataset) -> None:
    """Detect truncated native pixel data and unparsable encapsulated data."""
    elem = _pixel_element(ds)
    if elem is None or elem.value is None:
        return
    missing = [kw for kw in _GEOMETRY if kw not in ds]
    if missing:
        raise InputError(f"pixel data without {', '.join(missing)}")
    value = elem.value
    if _is_encapsulated(ds, elem):
        _check_fragments(ds, value)
        return
    expected = _expected_length(ds, elem.keyword)
    if len(value) < expected:
        raise InputError(f"truncated pixel data ({len(value)} of {expected} expected bytes)")


def _pixel_element(ds: Dataset) -> DataElement | None:
    """The pixel data element, if any."""
    for kw in _PIXEL_KEYWORDS:
        if kw in ds:
            return ds[kw]
    return None


def _is_encapsulated(ds: Dataset, elem: DataElement) -> bool:
    """Whether the pixel data is encapsulated (compressed)."""
    if elem.keyword != "PixelData":
        return False
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if tsyntax is not None:
        try:
            return bool(tsyntax.is_encapsulated)
        except Exception:
            pass
    # Undefined length plus a leading item tag is the encoding of encapsulation.
    return bytes(elem.value[:4]) == b"\xfe\xff\x00\xe0"


def _check_fragments(ds: Dataset, value: bytes) -> None:
    """Walk the encapsulated items; raise if they do not parse."""
    endianness = "<"
    if getattr(ds, "original_encoding", (None, True))[1] is False:
        endianness = ">"
    try:
        fragments = list(generate_fragments(value, endianness=endianness))
    except Exception as exc:
        raise InputError(f"encapsulated pixel data does not parse ({type(exc).__name__})") from None
    if not fragments or all(len(frag) == 0 for frag in fragments):
        raise InputError("encapsulated pixel data has no frame data")


def _expected_length(ds: Dataset, keyword: str) -> int:
    """Bytes of native pixel data implied by the image attributes."""
    rows = int(ds.Rows or 0)
    columns = int(ds.Columns or 0)
    bits = int(ds.BitsAllocated or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    try:
        frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        frames = 1
    if keyword == "FloatPixelData":
        bits = 32
    elif keyword == "DoubleFloatPixelData":
        bits = 64
    photometric = str(ds.get("PhotometricInterpretation", ""))
    return native_pixel_bytes(rows * columns * frames, samples, bits, photometric)


def native_pixel_bytes(pixels: int, samples: int, bits: int, photometric: str) -> int:
    """Bytes of native pixel data for ``pixels`` pixels (all frames) of the given layout."""
    if photometric == "YBR_FULL_422" and samples == 3:
        return pixels * 2 * (bits // 8)
    return (pixels * samples * bits + 7) // 8


def _tag_str(tag: BaseTag | int) -> str:
    """Format a tag as (gggg,eeee)."""
    value = int(tag)
    return f"({value >> 16:04X},{value & 0xFFFF:04X})"
