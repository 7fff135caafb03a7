"""Screenshots as test artefacts: every page test writes them the same way, to
build/screenshots/<name>.png (ignored by git, so a test run leaves the tree clean), and also to
docs/screenshots/<name>.png (committed and linked from the README, so a reader sees the product
as the tests last saw it) only when TALLY_UPDATE_SCREENSHOTS=1: `make screenshots` runs the page
tests so, and its refreshed copies are committed on purpose, never as a side effect of a run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "screenshots"
SCREENSHOTS = ROOT / "docs" / "screenshots"
UPDATE = "TALLY_UPDATE_SCREENSHOTS"


def save_screenshot(page: Page, name: str) -> Path:
    """Write the page's viewport as build/screenshots/<name>.png (and, with
    TALLY_UPDATE_SCREENSHOTS=1, copy it to docs/screenshots/<name>.png); return the build path.
    `name` is a bare file stem ("console", "console-phone"), never a path, so no test writes
    elsewhere."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or name.endswith(".png"):
        raise ValueError(f"screenshot name must be a bare stem like 'console', not {name!r}")
    BUILD.mkdir(parents=True, exist_ok=True)
    path = BUILD / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get(UPDATE) == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
    return path
