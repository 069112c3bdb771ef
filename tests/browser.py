"""Headless Chromium for the tests that need a real browser.

Debian's ``chromium`` and ``chromium-driver`` packages (installed by
``.ci/run``), driven with selenium; a missing binary fails the test with the
packages to install, never skips it.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest


def chromium(*arguments: str) -> Any:
    """Headless Chromium under selenium, driven through chromedriver, with more ``arguments``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail("headless Chromium is needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", *arguments):
        options.add_argument(argument)
    # Not the sanitizer runtime that .ci/run preloads into the tests: the
    # browser is not built for it, and chromedriver exits at once.
    env = {name: value for name, value in os.environ.items() if name != "LD_PRELOAD"}
    return webdriver.Chrome(options=options, service=Service(executable_path=driver, env=env))
