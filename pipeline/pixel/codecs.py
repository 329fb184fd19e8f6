"""Which pydicom decoding and encoding plugins to use.

pydicom tries its plugins in registration order, and GDCM comes first when
``python-gdcm`` is installed; GDCM 3.2 crashes the whole process (a segfault, which no
``except`` catches) on some JPEG files that pylibjpeg decodes fine. Veil therefore
names its plugin: pylibjpeg first, then pydicom's own, then Pillow, then whatever
else is available.
"""

from __future__ import annotations

from pydicom.pixels import get_encoder
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

PREFERRED_PLUGINS = ("pylibjpeg", "pydicom", "pillow")


def decoding_plugin(tsyntax: UID) -> str:
    """The ``decoding_plugin`` to pass to a decoder ("" lets pydicom choose)."""
    available = get_decoder(tsyntax).available_plugins
    return next((name for name in PREFERRED_PLUGINS if name in available), "")


#: Encoders in order of preference (GDCM's RLE encoder aborts the process on some input).
PREFERRED_ENCODERS = ("pydicom", "pylibjpeg", "pyjpegls")


def encoding_plugin(tsyntax: UID) -> str:
    """The ``encoding_plugin`` to pass to ``Dataset.compress`` ("" lets pydicom choose)."""
    encoder = get_encoder(tsyntax)
    available = encoder.available_plugins if encoder is not None else ()
    return next((name for name in PREFERRED_ENCODERS if name in available), "")
