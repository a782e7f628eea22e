"""Fixtures of the browser tests (helpers: :mod:`e2e.browser_support`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from e2e.browser_support import CHROMIUM, LAUNCH_ARGS


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, shared by a module's tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()
