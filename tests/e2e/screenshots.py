"""Screenshots as test artefacts: every page test writes them the same way, to
docs/screenshots/<name>.png (committed and linked from the README, so a reader sees the product
as the tests last saw it)."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def save_screenshot(page: Page, name: str) -> Path:
    """Write the page's viewport as docs/screenshots/<name>.png and return the path. `name` is a
    bare file stem ("console", "console-phone"), never a path, so no test writes elsewhere."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or name.endswith(".png"):
        raise ValueError(f"screenshot name must be a bare stem like 'console', not {name!r}")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
