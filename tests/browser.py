"""Headless Chromium through Selenium, for the viewer's tests and benchmark.

Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/setup.sh`` installs them) and
``selenium`` from PyPI. The driver is started from its fixed path, so Selenium Manager never
downloads one, and the browser from a fresh profile with everything that reaches the network
on its own switched off: a page that needs the network fails to show it here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")
# CI sets it: a missing browser fails the browser tests instead of skipping them.
REQUIRE = "SOFTREASON_REQUIRE_BROWSER"


def missing() -> str | None:
    """Why no browser can run here (None when one can)."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if absent:
        return (f"no headless browser: {', '.join(absent)} missing (apt-get install chromium "
                f"chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "no headless browser: selenium is not installed (pip install -e '.[test]')"
    return None


def required() -> bool:
    return os.environ.get(REQUIRE) == "1"


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile, quit (and its profile deleted) on
    exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="softreason-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
