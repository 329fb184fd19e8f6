"""Seeded generator of DICOM files with burned-in text and pixel ground truth.

Every file carries synthetic (Faker) PHI twice: in the header and rendered into the
pixels, in the layouts real devices use:

* ``corners``: CT/MR corner blocks (2 to 4 corners, 2 to 5 lines each), PHI mixed with
  clinical overlays (``W 400 L 40``, ``kV 120``, ``5 mm``...);
* ``us-bar``: an ultrasound header bar across the top (name, ID, date, institution,
  ``MI 1.1 TIs 0.4``...);
* ``screenshot``: secondary-capture "screenshot" text lines, often dark on a light panel;
* ``anatomy``: a line or two written over the anatomy, plus orientation letters and a
  scale (``R``, ``5 cm``).

Fonts are Pillow's default (``ImageFont.load_default(size=N)``) and any TrueType font
under ``/usr/share/fonts``, 7 to 24 px; bright-on-dark and dark-on-bright; three
contrast levels. Backgrounds are generated phantoms (noisy discs and ellipses,
gradients) or the few uncompressed real images shipped in pydicom's own
``pydicom/data/test_files`` (``CT_small.dcm``, ``MR_small.dcm``, the image area of
``examples_rgb_color.dcm``), resampled; nothing is downloaded. Modalities: CT (512x512,
12 bits stored in 16), MR (256x256, 16 bits), US (RGB 640x480), SC (RGB, 800x600 or
1024x768).

Ground truth (``manifest.json``): for every rendered line, its box (``x0, y0, x1, y1``
in stored pixels, exclusive ends, the tight box of the pixels its ink changed) and the
box of its PHI value's ink alone (a label such as ``DOB:`` left out), its entity
(``NAME``, ``ID``, ``DATE``, ``INSTITUTION``, ``LOCATION``, or ``OVERLAY`` for non-PHI
clinical text), whether it is PHI, the PHI value as rendered and the header
keyword it was copied from; per file, the split (``train`` / ``validation`` /
``test``, 60/20/20, drawn from the file's own seed) and every header PHI string.

Same ``(count, seed)``, same files byte for byte (with the same Faker, Pillow, fonts
and pydicom).

Run ``python -m training.pixel_corpus OUT_DIR --count N --seed S``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
import sys
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from faker import Faker
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

__all__ = [
    "ENTITIES",
    "PHI_ENTITIES",
    "Line",
    "Sample",
    "generate",
    "load_manifest",
    "load_or_generate",
    "main",
    "render_sample",
]

MANIFEST = "manifest.json"
#: Version of the generator; a manifest with another version is regenerated.
GENERATOR_VERSION = 3
PHI_ENTITIES = ("NAME", "ID", "DATE", "INSTITUTION", "LOCATION")
ENTITIES = (*PHI_ENTITIES, "OVERLAY")
SPLITS = (("train", 0.6), ("validation", 0.2), ("test", 0.2))
MODALITIES = (("CT", 0.4), ("MR", 0.2), ("US", 0.2), ("SC", 0.2))
FONT_SIZES = (7, 8, 9, 10, 11, 12, 13, 14, 16, 18, 20, 22, 24)
_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
_FONT_ROOT = Path("/usr/share/fonts")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Date formats rendered (strftime, with %b replaced by an English month).
DATE_FORMATS = ("%Y%m%d", "%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%b-%Y",
                "%b %d %Y", "%d %b %Y", "%m/%d/%y", "%Y/%m/%d")
#: Non-PHI clinical overlays (never a 5+ digit run, never a name).
OVERLAYS = ("W 400 L 40", "WW 350 WL 50", "W 1500 L -600", "5 cm", "10 mm", "R", "L", "A",
            "P", "AXIAL", "CORONAL", "kV 120", "mA 250", "SL 5.0mm", "Im: 23/120", "Se: 3",
            "FOV 35cm", "TR 4000 TE 90", "T2 FSE", "ABDOMEN", "HEAD", "CHEST", "Zoom 100%",
            "Gain 50%", "DR 60", "15 Hz", "C5-1", "THI", "2D", "MI 1.1 TIs 0.4", "Tilt 0.0",
            "DFOV 24.0", "STND", "Ex: 4521", "1.25 mm")


@dataclass
class Line:
    """One rendered line of text and its ground truth.

    Attributes
    ----------
    text : str
        The whole line as rendered (label included).
    entity : str
        One of :data:`ENTITIES`.
    phi : bool
        Whether the line identifies someone (``entity != "OVERLAY"``).
    value : str
        The PHI part of ``text`` (empty for an overlay).
    keyword : str
        Header keyword the PHI was copied from (empty for an overlay).
    form : str
        How ``value`` renders the header value: a date format, ``dicom``/``natural``/
        ``comma`` name order, or ``verbatim``.
    box : list of int
        ``[x0, y0, x1, y1]`` in stored pixels, exclusive ends (filled by rendering).
    value_box : list of int
        The same for the ink of ``value`` alone (a label before it and text after it
        left out; equal to ``box`` when the line is its value; empty for an overlay).
    layout, font, size, polarity, contrast
        How it was drawn.
    """

    text: str
    entity: str
    value: str = ""
    keyword: str = ""
    form: str = "verbatim"
    box: list[int] = field(default_factory=list)
    value_box: list[int] = field(default_factory=list)
    layout: str = ""
    font: str = "default"
    size: int = 12
    polarity: str = "bright"
    contrast: float = 1.0

    @property
    def phi(self) -> bool:
        """Whether the line holds PHI."""
        return self.entity != "OVERLAY"


@dataclass
class Sample:
    """One generated file and its ground truth."""

    name: str
    index: int
    seed: str
    split: str
    modality: str
    rows: int
    columns: int
    background: str
    layout: str
    header: dict[str, str]
    phi_strings: list[str]
    lines: list[Line]

    def to_json(self) -> dict[str, Any]:
        """Return the manifest entry (``phi`` spelled out on each line)."""
        data = asdict(self)
        for line, entry in zip(self.lines, data["lines"], strict=True):
            entry["phi"] = line.phi
        return data


# --- PHI ------------------------------------------------------------------------------


def format_date(day: dt.date, fmt: str) -> str:
    """Render ``day`` with ``fmt`` (``%b`` is always an English month abbreviation)."""
    return day.strftime(fmt.replace("%b", _MONTHS[day.month - 1]))


def _identity(fake: Faker, rnd: random.Random) -> dict[str, Any]:
    """Synthetic PHI of one patient and study."""
    family = fake.last_name().upper().replace(" ", "")
    given = fake.first_name().upper().replace(" ", "")
    ref_family, ref_given = fake.last_name().upper(), fake.first_name().upper()
    birth = fake.date_of_birth(minimum_age=1, maximum_age=95)
    study = fake.date_between(start_date=dt.date(2015, 1, 1), end_date=dt.date(2026, 6, 30))
    mrn_kind = rnd.randrange(3)
    if mrn_kind == 0:
        mrn = str(rnd.randrange(10**6, 10**8))
    elif mrn_kind == 1:
        mrn = f"{rnd.choice('ABCDEFGHJKMNPRSTUVWXZ')}{rnd.randrange(10**6, 10**7)}"
    else:
        mrn = f"{rnd.randrange(100, 999)}{rnd.randrange(10**5, 10**6)}"
    accession = rnd.choice(["", "E", "A", "RA"]) + str(rnd.randrange(10**7, 10**9))
    suffix = rnd.choice(["HOSPITAL", "MEDICAL CENTER", "CLINIC", "HEALTH", "IMAGING CENTER"])
    base = fake.last_name().upper() if rnd.random() < 0.5 else fake.city().upper()
    institution = f"{base} {suffix}"
    address = f"{fake.building_number()} {fake.street_name()}".upper()
    return {"family": family, "given": given, "ref_family": ref_family.replace(" ", ""),
            "ref_given": ref_given.replace(" ", ""), "birth": birth, "study": study,
            "mrn": mrn, "accession": accession, "institution": institution,
            "address": address, "city": fake.city().upper()}


def _header(who: dict[str, Any]) -> dict[str, str]:
    """Header values (keyword -> DICOM string) of one identity."""
    return {
        "PatientName": f"{who['family']}^{who['given']}",
        "PatientID": who["mrn"],
        "PatientBirthDate": who["birth"].strftime("%Y%m%d"),
        "StudyDate": who["study"].strftime("%Y%m%d"),
        "AccessionNumber": who["accession"],
        "InstitutionName": who["institution"],
        "PatientAddress": f"{who['address']}, {who['city']}",
        "ReferringPhysicianName": f"{who['ref_family']}^{who['ref_given']}",
    }


def _phi_strings(header: dict[str, str]) -> list[str]:
    """The identifying strings an output header must not contain."""
    out = {header["PatientID"], header["AccessionNumber"], header["PatientBirthDate"],
           header["InstitutionName"], header["PatientAddress"].split(",")[0]}
    for keyword in ("PatientName", "ReferringPhysicianName"):
        out.update(p for p in header[keyword].split("^") if len(p) >= 3)
    return sorted(out)


def _name(family: str, given: str, form: str, rnd: random.Random) -> str:
    if form == "dicom":
        return f"{family}^{given}"
    if form == "comma":
        return f"{family}, {given}"
    text = f"{given.title()} {family.title()}"
    return text.upper() if rnd.random() < 0.5 else text


def _phi_lines(who: dict[str, Any], rnd: random.Random) -> list[Line]:
    """Candidate PHI lines (label + value) for one file, shuffled."""
    lines = []
    form = rnd.choice(["dicom", "natural", "comma"])
    value = _name(who["family"], who["given"], form, rnd)
    label = rnd.choice(["", "", "Name: ", "Pt: ", "Patient: "])
    lines.append(Line(label + value, "NAME", value, "PatientName", form))
    if rnd.random() < 0.4:
        form = rnd.choice(["dicom", "natural", "comma"])
        value = _name(who["ref_family"], who["ref_given"], form, rnd)
        lines.append(Line(rnd.choice(["Ref: ", "Dr. ", "Referring: "]) + value, "NAME", value,
                          "ReferringPhysicianName", form))
    label = rnd.choice(["", "ID: ", "MRN: ", "MRN ", "PID "])
    lines.append(Line(label + who["mrn"], "ID", who["mrn"], "PatientID"))
    if rnd.random() < 0.6:
        label = rnd.choice(["Acc: ", "ACC# ", "Accession: ", ""])
        lines.append(Line(label + who["accession"], "ID", who["accession"], "AccessionNumber"))
    fmt = rnd.choice(DATE_FORMATS)
    value = format_date(who["birth"], fmt)
    lines.append(Line(rnd.choice(["DOB: ", "DOB ", "Born ", ""]) + value, "DATE", value,
                      "PatientBirthDate", fmt))
    if rnd.random() < 0.7:
        fmt = rnd.choice(DATE_FORMATS)
        value = format_date(who["study"], fmt)
        tail = rnd.choice(["", f" {rnd.randrange(24):02d}:{rnd.randrange(60):02d}"])
        lines.append(Line(rnd.choice(["", "Study: ", "Exam "]) + value + tail, "DATE", value,
                          "StudyDate", fmt))
    if rnd.random() < 0.7:
        lines.append(Line(who["institution"], "INSTITUTION", who["institution"],
                          "InstitutionName"))
    if rnd.random() < 0.25:
        lines.append(Line(who["address"], "LOCATION", who["address"], "PatientAddress"))
    rnd.shuffle(lines)
    return lines


def _overlays(rnd: random.Random, n: int) -> list[Line]:
    return [Line(text, "OVERLAY") for text in rnd.sample(OVERLAYS, n)]


# --- fonts and backgrounds ------------------------------------------------------------


@cache
def ttf_fonts() -> tuple[str, ...]:
    """TrueType fonts found under /usr/share/fonts (sorted; may be empty)."""
    if not _FONT_ROOT.is_dir():
        return ()
    found = sorted(str(p) for p in _FONT_ROOT.rglob("*.ttf")
                   if "Math" not in p.name and "Oblique" not in p.name)
    return tuple(found[:12])


@cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if name == "default":
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(name, size=size)


def _resample(img: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Bilinear resize of a float image (2-D or RGB) with Pillow."""
    if img.ndim == 2:
        pil = Image.fromarray(img.astype(np.float32), mode="F")
        return np.asarray(pil.resize((cols, rows), Image.Resampling.BILINEAR), np.float64)
    chans = [_resample(img[..., c], rows, cols) for c in range(img.shape[2])]
    return np.stack(chans, axis=-1)


@cache
def _real(name: str) -> np.ndarray | None:
    """Pixels of one of pydicom's bundled test files (None if absent)."""
    path = _TEST_FILES / name
    if not path.is_file():
        return None
    ds = pydicom.dcmread(path)
    arr = np.asarray(ds.pixel_array, dtype=np.float64)
    if name == "examples_rgb_color.dcm":
        arr = arr[52:172, 45:275]  # the image area only: the file has its own burned-in text
    return arr


def real_backgrounds() -> dict[str, list[str]]:
    """Bundled real images available locally, per modality."""
    wanted = {"CT": ["CT_small.dcm"], "MR": ["MR_small.dcm"], "US": ["examples_rgb_color.dcm"]}
    return {m: [n for n in names if (_TEST_FILES / n).is_file()] for m, names in wanted.items()}


def _phantom(rows: int, cols: int, rnd: random.Random, rng: np.random.Generator) -> np.ndarray:
    """A noisy disc or ellipses on a dark field, with a gradient; values in [0, 1]."""
    yy, xx = np.mgrid[:rows, :cols].astype(np.float64)
    img = np.full((rows, cols), 0.03)
    cy, cx = rows / 2 + rnd.uniform(-0.05, 0.05) * rows, cols / 2
    ry, rx = rnd.uniform(0.28, 0.4) * rows, rnd.uniform(0.3, 0.42) * cols
    img[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = rnd.uniform(0.3, 0.45)
    for _ in range(rnd.randrange(2, 6)):
        ey, ex = cy + rnd.uniform(-0.5, 0.5) * ry, cx + rnd.uniform(-0.5, 0.5) * rx
        ay, ax = rnd.uniform(0.05, 0.25) * ry, rnd.uniform(0.05, 0.25) * rx
        img[((yy - ey) / ay) ** 2 + ((xx - ex) / ax) ** 2 < 1] = rnd.uniform(0.1, 0.7)
    img += (xx / cols) * rnd.uniform(0.0, 0.08)
    img += rng.normal(0.0, rnd.uniform(0.01, 0.03), (rows, cols))
    return np.clip(img, 0.0, 1.0)


def _background(modality: str, rows: int, cols: int, rnd: random.Random,
                rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Background in [0, 1] (HxW, or HxWx3 for US/SC) and its description."""
    real = real_backgrounds().get(modality, [])
    if real and rnd.random() < 0.35:
        name = rnd.choice(real)
        arr = _real(name)
        if arr is not None:
            low, high = float(arr.min()), float(arr.max())
            img = _resample((arr - low) / max(high - low, 1.0), rows, cols)
            img = np.clip(img * 0.85, 0.0, 1.0)  # keep headroom for bright text
            if img.ndim == 2 and modality in ("US", "SC"):
                img = np.repeat(img[..., None], 3, axis=-1)
            return img, f"pydicom:{name}"
    img = _phantom(rows, cols, rnd, rng)
    if modality in ("US", "SC"):
        tint = np.array([rnd.uniform(0.8, 1.0) for _ in range(3)])
        img = img[..., None] * tint
        if modality == "US":  # sector mask: outside the fan is black
            yy, xx = np.mgrid[:rows, :cols]
            angle = np.abs(np.arctan2(xx - cols / 2, yy + rows * 0.1))
            img[(angle > 0.6) | (yy < rows * 0.12)] = 0.0
        return img, "phantom-gradient"
    return img, "phantom"


# --- layout and rendering -------------------------------------------------------------


def _style(rnd: random.Random, small: bool) -> tuple[str, int]:
    fonts = ("default", *ttf_fonts())
    name = fonts[0] if rnd.random() < 0.5 else rnd.choice(fonts)
    sizes = [s for s in FONT_SIZES if s <= 14] if small else list(FONT_SIZES)
    return name, rnd.choice(sizes)


def _fits(box: tuple[int, int, int, int], rows: int, cols: int,
          taken: list[tuple[int, int, int, int]], gap: int = 2) -> bool:
    x0, y0, x1, y1 = box
    if x0 < 1 or y0 < 1 or x1 > cols - 1 or y1 > rows - 1:
        return False
    return all(x1 + gap <= a0 or a1 + gap <= x0 or y1 + gap <= b0 or b1 + gap <= y0
               for a0, b0, a1, b1 in taken)


@dataclass
class _Canvas:
    rows: int
    cols: int
    draw: ImageDraw.ImageDraw
    taken: list[tuple[int, int, int, int]]
    placed: list[tuple[Line, int, int, str]]
    plates: list[tuple[tuple[int, int, int, int], float]]

    def place(self, line: Line, x: int, y: int, anchor: str = "la") -> tuple[int, ...] | None:
        """Place ``line`` with its anchor at (x, y) if it fits; return its text box."""
        font = _font(line.font, line.size)
        box = tuple(int(v) for v in self.draw.textbbox((x, y), line.text, font=font,
                                                       anchor=anchor))
        if box[2] <= box[0] or not _fits(box, self.rows, self.cols, self.taken):  # type: ignore[arg-type]
            return None
        self.taken.append(box)  # type: ignore[arg-type]
        self.placed.append((line, x, y, anchor))
        return box


def _corners(canvas: _Canvas, phi: list[Line], rnd: random.Random, layout: str) -> None:
    corners = rnd.sample(["tl", "tr", "bl", "br"], rnd.randrange(2, 5))
    pool = list(phi)
    for corner in corners:
        n = rnd.randrange(2, 6)
        block = [pool.pop() for _ in range(min(n, len(pool)))] if corner[0] == "t" else []
        block += _overlays(rnd, max(0, n - len(block)))
        if corner[0] == "b" and pool and rnd.random() < 0.5:
            block[0] = pool.pop()
        font, size = _style(rnd, small=False)
        polarity = "bright" if rnd.random() < 0.8 else "dark"
        contrast = rnd.choice([1.0, 1.0, 0.7, 0.45])
        step = int(size * 1.35) + 2
        margin = rnd.randrange(3, 12)
        ys = [margin + i * step for i in range(len(block))]
        if corner[0] == "b":
            ys = [canvas.rows - margin - (len(block) - i) * step for i in range(len(block))]
        if polarity == "dark":  # dark text sits on a light label plate
            top, bottom = ys[0] - 3, ys[-1] + step + 2
            left = margin - 3 if corner[1] == "l" else canvas.cols - canvas.cols // 3
            right = canvas.cols // 3 if corner[1] == "l" else canvas.cols - margin + 3
            canvas.plates.append(((max(left, 0), max(top, 0), min(right, canvas.cols),
                                   min(bottom, canvas.rows)), rnd.uniform(0.8, 0.95)))
        boxes = []
        for line, y in zip(block, ys, strict=True):
            line.font, line.size, line.polarity, line.contrast = font, size, polarity, contrast
            line.layout = layout
            if corner[1] == "l":
                boxes.append(canvas.place(line, margin, y, "la"))
            else:
                boxes.append(canvas.place(line, canvas.cols - margin, y, "ra"))
        if polarity == "dark":  # a line longer than its plate would be partly invisible
            _cover_plate(canvas, [b for b in boxes if b is not None])


def _cover_plate(canvas: _Canvas, boxes: list[tuple[int, ...]]) -> None:
    """Grow the last plate to hold ``boxes`` with 3 px to spare (clipped to the image)."""
    if not boxes:
        return
    (x0, y0, x1, y1), level = canvas.plates[-1]
    x0 = max(min(x0, min(b[0] for b in boxes) - 3), 0)
    x1 = min(max(x1, max(b[2] for b in boxes) + 3), canvas.cols)
    canvas.plates[-1] = ((x0, y0, x1, y1), level)


def _us_bar(canvas: _Canvas, phi: list[Line], rnd: random.Random) -> None:
    font, size = _style(rnd, small=True)
    height = int(size * 1.4) * 2 + 8
    canvas.plates.append(((0, 0, canvas.cols, height), rnd.uniform(0.0, 0.12)))
    items = phi[:4] + _overlays(rnd, 2)
    x, y = 6, 4
    for line in items:
        line.font, line.size, line.polarity, line.layout = font, size, "bright", "us-bar"
        line.contrast = rnd.choice([1.0, 0.8, 0.6])
        box = canvas.place(line, x, y)
        if box is None and y == 4:
            x, y = 6, 4 + int(size * 1.4) + 2
            box = canvas.place(line, x, y)
        if box is not None:
            x = box[2] + rnd.randrange(12, 40)
    _anatomy(canvas, phi[4:], rnd, extra=1)


def _screenshot(canvas: _Canvas, phi: list[Line], rnd: random.Random) -> None:
    font, size = _style(rnd, small=False)
    dark = rnd.random() < 0.6
    step = int(size * 1.5) + 2
    items = phi + _overlays(rnd, 2)
    width = int(canvas.cols * rnd.uniform(0.3, 0.5))
    left = rnd.choice([0, canvas.cols - width])
    panel = (left, 0, left + width, min(canvas.rows, 12 + step * len(items)))
    if dark:
        canvas.plates.append((panel, rnd.uniform(0.85, 1.0)))
    y = 8
    for line in items:
        line.font, line.size, line.layout = font, size, "screenshot"
        line.polarity = "dark" if dark else "bright"
        line.contrast = rnd.choice([1.0, 0.8, 0.6])
        canvas.place(line, left + 8, y)
        y += step


def _anatomy(canvas: _Canvas, phi: list[Line], rnd: random.Random, extra: int = 2) -> None:
    items = phi[:2] + _overlays(rnd, extra)
    for line in items:
        font, size = _style(rnd, small=False)
        line.font, line.size, line.layout = font, size, "anatomy"
        line.polarity = "bright" if rnd.random() < 0.75 else "dark"
        line.contrast = rnd.choice([1.0, 0.7, 0.45])
        for _ in range(20):
            x = rnd.randrange(int(canvas.cols * 0.2), int(canvas.cols * 0.7))
            y = rnd.randrange(int(canvas.rows * 0.25), int(canvas.rows * 0.75))
            if canvas.place(line, x, y) is not None:
                break


def _layout(modality: str, rnd: random.Random) -> str:
    choices = {"CT": ["corners", "corners", "corners+anatomy"],
               "MR": ["corners", "corners+anatomy"],
               "US": ["us-bar"], "SC": ["screenshot", "screenshot", "corners"]}
    return rnd.choice(choices[modality])


def _ink_level(background: np.ndarray, line: Line) -> float:
    """Ink level in [0, 1] for one line, from polarity, contrast and what lies under it."""
    x0, y0, x1, y1 = line.box
    under = float(np.median(background[y0:y1, x0:x1]))
    if line.polarity == "dark" and under < 0.3:
        line.polarity = "bright"  # dark ink on a dark field would be invisible
    if line.polarity == "bright":
        return under + line.contrast * (1.0 - under)
    return under - line.contrast * under


def render_sample(sample: Sample, rnd: random.Random,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[Line]]:
    """Lay out and render; return (background, image) in [0, 1] and the placed lines.

    ``background`` is the same picture without the text (panels and bars included): a
    line's box is the tight box of the pixels its ink changed.
    """
    rows, cols = sample.rows, sample.columns
    base, sample.background = _background(sample.modality, rows, cols, rnd, rng)
    layer = Image.new("L", (cols, rows))
    canvas = _Canvas(rows, cols, ImageDraw.Draw(layer), [], [], [])
    phi = sample.lines
    if sample.layout.startswith("corners"):
        _corners(canvas, phi, rnd, "corners")
        done = [p[0] for p in canvas.placed]
        rest = [line for line in phi if all(line is not d for d in done)]
        if sample.layout.endswith("anatomy") or rest:
            _anatomy(canvas, rest, rnd)
    elif sample.layout == "us-bar":
        _us_bar(canvas, phi, rnd)
    else:
        _screenshot(canvas, phi, rnd)
    for (x0, y0, x1, y1), level in canvas.plates:
        base[y0:y1, x0:x1] = level
    image = base.copy()
    mono = base if base.ndim == 2 else base.mean(axis=-1)
    placed = []
    for line, x, y, anchor in canvas.placed:
        mask = Image.new("L", (cols, rows))
        ImageDraw.Draw(mask).text((x, y), line.text, fill=255, font=_font(line.font, line.size),
                                  anchor=anchor)
        alpha = np.asarray(mask, dtype=np.float64) / 255.0
        ys, xs = np.nonzero(alpha)
        if ys.size == 0:
            continue
        line.box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        line.value_box = _value_box(line, x, anchor, xs, ys)
        ink = _ink_level(mono, line)
        if base.ndim == 3:
            alpha = alpha[..., None]
        image = image * (1.0 - alpha) + ink * alpha
        placed.append(line)
    return base, image, placed


def _value_box(line: Line, x: int, anchor: str, xs: np.ndarray, ys: np.ndarray) -> list[int]:
    """Tight box of the ink of ``line.value`` (``xs``, ``ys``: the line's ink pixels; the
    line was drawn with ``anchor`` at column ``x``): the columns between the advance of
    the text before the value and the advance of the text through it."""
    start = line.text.find(line.value) if line.value else -1
    if start < 0:
        return []
    if line.value == line.text:
        return list(line.box)
    font = _font(line.font, line.size)
    origin = x - {"l": 0.0, "m": 0.5, "r": 1.0}[anchor[0]] * font.getlength(line.text)
    left = origin + font.getlength(line.text[:start])
    right = origin + font.getlength(line.text[:start + len(line.value)])
    keep = (xs >= np.floor(left)) & (xs < np.ceil(right))
    if not keep.any():
        raise ValueError(f"no ink between the value's advances (file font {line.font})")
    return [int(xs[keep].min()), int(ys[keep].min()), int(xs[keep].max()) + 1,
            int(ys[keep].max()) + 1]


# --- DICOM ----------------------------------------------------------------------------


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def _dataset(sample: Sample, image: np.ndarray, seed: str) -> Dataset:
    """A DICOM dataset holding ``image`` (values in [0, 1]) and the sample's header."""
    sop_class = {"CT": CTImageStorage, "MR": MRImageStorage, "US": UltrasoundImageStorage,
                 "SC": SecondaryCaptureImageStorage}[sample.modality]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(seed, "sop")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = _uid(seed, "study")
    ds.SeriesInstanceUID = _uid(seed, "series")
    ds.Modality = sample.modality
    ds.SpecificCharacterSet = "ISO_IR 100"
    for keyword, value in sample.header.items():
        setattr(ds, keyword, value)
    ds.PatientSex = "O"
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "VEIL SYNTHETIC"
    ds.BurnedInAnnotation = "YES"
    ds.Rows, ds.Columns = sample.rows, sample.columns
    ds.PixelRepresentation = 0
    if image.ndim == 3:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = np.rint(image * 255.0).astype(np.uint8).tobytes()
        return ds
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 16
    bits = 12 if sample.modality == "CT" else 16
    ds.BitsStored, ds.HighBit = bits, bits - 1
    top = 2**bits - 1 if sample.modality == "CT" else 4000
    if sample.modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
    else:
        ds.WindowCenter, ds.WindowWidth = str(top // 2), str(top)
    ds.PixelData = np.rint(image * top).astype(np.uint16).tobytes()
    return ds


def _bucket(seed: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _pick(table: tuple[tuple[str, float], ...], u: float) -> str:
    total = 0.0
    for name, share in table:
        total += share
        if u < total:
            return name
    return table[-1][0]


def make_sample(index: int, seed: int) -> tuple[Sample, Dataset, np.ndarray]:
    """Generate file ``index`` of the corpus of ``seed``; return truth, dataset, background.

    The background is the rendering without text, in the dataset's stored values.
    """
    file_seed = f"{seed}:{index}"
    rnd = random.Random(file_seed)
    rng = np.random.default_rng(int(hashlib.sha256(file_seed.encode()).hexdigest()[:12], 16))
    fake = Faker("en_US")
    fake.seed_instance(file_seed)
    modality = _pick(MODALITIES, _bucket(file_seed, "modality"))
    rows, cols = {"CT": (512, 512), "MR": (256, 256), "US": (480, 640)}.get(
        modality, rnd.choice([(600, 800), (768, 1024)]))
    who = _identity(fake, rnd)
    header = _header(who)
    n_overlay = 0 if modality == "US" else rnd.randrange(0, 2)
    sample = Sample(
        name=f"{index:05d}_{modality}.dcm", index=index, seed=file_seed,
        split=_pick(SPLITS, _bucket(file_seed, "split")), modality=modality, rows=rows,
        columns=cols, background="", layout=_layout(modality, rnd), header=header,
        phi_strings=_phi_strings(header), lines=_phi_lines(who, rnd) + _overlays(rnd, n_overlay),
    )
    base, image, placed = render_sample(sample, rnd, rng)
    sample.lines = placed
    ds = _dataset(sample, image, file_seed)
    background = _dataset(sample, base, file_seed)
    return sample, ds, np.asarray(background.pixel_array)


def generate(out: Path, count: int, seed: int) -> list[Sample]:
    """Write ``count`` files and ``manifest.json`` to ``out``; return the samples."""
    out.mkdir(parents=True, exist_ok=True)
    samples = []
    for index in range(count):
        sample, ds, _ = make_sample(index, seed)
        ds.save_as(out / sample.name, enforce_file_format=True)
        samples.append(sample)
    manifest = {
        "generator_version": GENERATOR_VERSION, "count": count, "seed": seed,
        "pydicom": pydicom.__version__, "fonts": ["default", *ttf_fonts()],
        "files": [s.to_json() for s in samples],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return samples


def load_manifest(root: Path) -> dict[str, Any]:
    """Read ``manifest.json`` of a generated corpus."""
    data: dict[str, Any] = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    return data


def load_or_generate(root: Path, count: int, seed: int) -> dict[str, Any]:
    """Reuse the corpus at ``root`` when its manifest matches, else generate it."""
    try:
        data = load_manifest(root)
        if (data.get("generator_version"), data.get("count"), data.get("seed")) == (
                GENERATOR_VERSION, count, seed) and all(
                (root / f["name"]).is_file() for f in data["files"]):
            return data
    except (OSError, ValueError, KeyError):
        pass
    generate(root, count, seed)
    return load_manifest(root)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    samples = generate(args.out, args.count, args.seed)
    lines = [line for s in samples for line in s.lines]
    by_split = {name: sum(s.split == name for s in samples) for name, _ in SPLITS}
    by_entity = {e: sum(line.entity == e for line in lines) for e in ENTITIES}
    print(f"wrote {len(samples)} files to {args.out} ({by_split}); {len(lines)} lines: "
          f"{by_entity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
