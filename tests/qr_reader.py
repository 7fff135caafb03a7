"""Reads a QR code the way a phone does, for the presenter's tests: the SVG Tally serves is drawn
into pixels and decoded by zxing-cpp (ZXing's C++ port, from PyPI), a reader that shares no code
with segno, which drew it. So a test that reads back the join URL proves the code scans, not only
that segno agrees with itself."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import zxingcpp

SVG_NS = "{http://www.w3.org/2000/svg}"
PIXELS_PER_MODULE = 8
_STEP = re.compile(r"([Mmhv])\s*(-?\d+(?:\.\d+)?)(?:\s+(-?\d+(?:\.\d+)?))?")


def decode_svg(svg: bytes) -> str:
    """The text of the one QR code in `svg` (AssertionError if there is not exactly one)."""
    root = ET.fromstring(svg)  # noqa: S314 - the SVG of the server under test, not untrusted input
    width, height = (int(float(v)) for v in root.attrib["viewBox"].split()[2:])
    dark = [
        path.attrib["d"]
        for path in root.iter(f"{SVG_NS}path")
        if path.attrib.get("stroke", "").lower() in ("#000", "#000000", "black")
    ]
    assert len(dark) == 1, f"expected one dark stroked path, found {len(dark)}"
    modules = _modules(dark[0], width, height)
    scale = PIXELS_PER_MODULE
    pixels = bytearray(b"\xff" * (width * scale * height * scale))
    for y, row in enumerate(modules):
        for x, on in enumerate(row):
            if on:
                for dy in range(scale):
                    start = ((y * scale + dy) * width + x) * scale
                    pixels[start : start + scale] = b"\x00" * scale
    image = memoryview(bytes(pixels)).cast("B", (height * scale, width * scale))
    found = zxingcpp.read_barcodes(
        image, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    )
    assert len(found) == 1, f"expected one QR code, zxing-cpp read {len(found)}"
    return str(found[0].text)


def _modules(d: str, width: int, height: int) -> list[list[bool]]:
    """The modules a segno path draws: `M x y` / `m dx dy` moves and `h n` runs of n dark
    modules on the row at y - 0.5 (segno strokes each row along its middle, width 1)."""
    grid = [[False] * width for _ in range(height)]
    x = y = 0.0
    for command, first, second in _STEP.findall(d):
        a = float(first)
        if command == "M":
            x, y = a, float(second)
        elif command == "m":
            x, y = x + a, y + float(second)
        elif command == "h":
            row = int(y - 0.5)
            for column in range(int(min(x, x + a)), int(max(x, x + a))):
                grid[row][column] = True
            x += a
        else:
            raise AssertionError(f"unexpected path command {command!r} in the QR code")
    return grid
