"""The page of ``einderive serve`` in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium), against the real server on a free loopback port.

Run as a script, ``python tests/test_serve_browser.py examples/serve-page.png`` makes the
README's screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import pytest


def _missing(what: str) -> NoReturn:
    """CI installs the browser and Selenium (.ci/run, the test extra): there it is a failure."""
    message = f"the browser test needs {what}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message, allow_module_level=True)


try:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    _missing("selenium (pip install '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
SEED = "Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]"
WAIT = 90  # seconds: the first answer waits for the workers to import torch and jax


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        _missing("Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    return browser, driver


class Server:
    """``python -m einderive serve --port 0`` as a subprocess; ``url`` is what it prints."""

    def __init__(self) -> None:
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "einderive", "serve", "--port", "0", "--time-limit", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if match is None:
            self.process.kill()
            raise AssertionError(f"the server printed no address: {line!r}")
        self.url = match.group(0)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _browser() -> webdriver.Chrome:
    binary, driver = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1440,1100",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = _browser()
    yield driver
    driver.quit()


def _fill(browser: webdriver.Chrome, expression: str, params="", shapes="", ranges="") -> None:
    for field, value in (
        ("expression", expression),
        ("params", params),
        ("shapes", shapes),
        ("ranges", ranges),
    ):
        box = browser.find_element(By.ID, field)
        box.clear()
        if value:
            box.send_keys(value)


def _derive(browser: webdriver.Chrome) -> None:
    # the button is disabled from the click until the answer is shown
    browser.find_element(By.ID, "derive").click()
    WebDriverWait(browser, WAIT).until(
        lambda b: not b.find_element(By.ID, "derive").get_attribute("disabled")
    )


def _pullback_math(browser: webdriver.Chrome) -> dict[str, str]:
    """The text of each pullback's rendered KaTeX, by tensor."""
    return {
        item.get_attribute("data-tensor"): item.find_element(By.CSS_SELECTOR, ".katex").text
        + item.find_element(By.CSS_SELECTOR, ".katex annotation").get_attribute("textContent")
        for item in browser.find_elements(By.CSS_SELECTOR, "#pullbacks .pullback[data-tensor]")
    }


def _requested_urls(browser: webdriver.Chrome) -> list[str]:
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _wait_verified(browser: webdriver.Chrome) -> str:
    badge = browser.find_element(By.ID, "badge")
    WebDriverWait(browser, WAIT).until(lambda b: "pending" not in badge.get_attribute("class"))
    return badge.text


def test_the_page_in_chromium(server: Server, browser: webdriver.Chrome, tmp_path: Path) -> None:
    browser.get(server.url)
    assert browser.title.startswith("einderive")

    # the seed: dW and dX rendered by KaTeX, the convolution calls, a green badge
    _fill(browser, SEED)
    _derive(browser)
    math = _pullback_math(browser)
    assert set(math) == {"W", "X"}
    assert "dW" in math["W"] and "dX" in math["X"]
    assert browser.find_elements(By.CSS_SELECTOR, "#forward .katex")
    calls = [pre.text for pre in browser.find_elements(By.CSS_SELECTOR, "#pullbacks .call pre")]
    assert any("dX = " in call and "conv(dY, W" in call for call in calls)
    assert any("jax.lax.conv_general_dilated(" in call for call in calls)
    assert any("torch.nn.functional.conv" in call for call in calls)
    badge = _wait_verified(browser)
    assert "verified" in badge and "failed" not in badge, badge
    assert "ok" in browser.find_element(By.ID, "badge").get_attribute("class").split()

    # the NumPy tab holds the pullback functions
    browser.find_element(By.CSS_SELECTOR, '#tabs button[data-kind="numpy"]').click()
    assert "def pullback_X" in browser.find_element(By.ID, "code").text
    browser.find_element(By.CSS_SELECTOR, '#tabs button[data-kind="loops"]').click()
    assert "for " in browser.find_element(By.ID, "code").text
    browser.find_element(By.CSS_SELECTOR, '#tabs button[data-kind="numpy"]').click()
    browser.save_screenshot(str(tmp_path / "seed-symbolic.png"))

    # numeric shapes: the Jacobian picture, and what hovering a cell says
    _fill(browser, SEED, params="s=2", shapes="X=7x7, W=3x3")
    _derive(browser)
    canvases = browser.find_elements(By.CSS_SELECTOR, '#jacobians figure[data-wrt="X"] canvas')
    assert canvases, "no Jacobian picture"
    canvas = canvases[0]
    assert canvas.size["width"] > 0 and canvas.size["height"] > 0
    width = int(canvas.get_attribute("width"))
    height = int(canvas.get_attribute("height"))
    assert width > 49 and height > 9  # 9 rows (Y is 3x3) by 49 columns (X is 7x7)
    # row 0 is Y[0, 0], whose window starts at X[-1, -1]: X[0, 0] (column 0) is W[1, 1]
    cell = (width - 1) // 49
    browser.execute_script(
        "const c = arguments[0], box = c.getBoundingClientRect();"
        "c.dispatchEvent(new MouseEvent('mousemove', {clientX: box.left + arguments[1],"
        " clientY: box.top + arguments[1]}));",
        canvas,
        cell // 2,
    )
    tooltip = browser.find_element(By.ID, "tooltip").text
    assert "Y[0, 0]" in tooltip and "X[0, 0]" in tooltip and "W[1, 1]" in tooltip, tooltip
    assert "verified" in _wait_verified(browser)
    numeric_url = browser.current_url
    numeric_math = _pullback_math(browser)
    browser.save_screenshot(str(tmp_path / "seed-numeric.png"))

    # an error: the message, and the column marked in the input itself
    _fill(browser, "Y[i,j] = X[i*j]")
    _derive(browser)
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    assert "column 12" in error.text and "affine" in error.text
    mark = browser.find_element(By.CSS_SELECTOR, "#backdrop mark.error-mark")
    assert mark.get_attribute("textContent") == "i*j"
    field = browser.find_element(By.ID, "expression").rect
    assert field["x"] <= mark.rect["x"] < field["x"] + field["width"]
    browser.save_screenshot(str(tmp_path / "error.png"))

    # the URL holds the state: loading it again gives the same derivation
    browser.get(numeric_url)
    WebDriverWait(browser, WAIT).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#pullbacks .pullback[data-tensor] .katex")
    )
    assert browser.find_element(By.ID, "expression").get_attribute("value") == SEED
    assert browser.find_element(By.ID, "shapes").get_attribute("value") == "X=7x7, W=3x3"
    assert _pullback_math(browser) == numeric_math
    assert browser.find_elements(By.CSS_SELECTOR, '#jacobians figure[data-wrt="X"] canvas')

    # an example button fills the form and derives (tests/test_serve.py verifies each example);
    # clicked right after another, the first one's late answers do not overwrite it
    for label in ("Softmax", "Transposed convolution"):
        browser.find_element(
            By.XPATH, f'//div[@id="examples"]/button[contains(., "{label}")]'
        ).click()
    WebDriverWait(browser, WAIT).until(
        lambda b: (
            "Y[s*i+m] = X[i]*W[m]" in b.find_element(By.ID, "expression").get_attribute("value")
            and not b.find_element(By.ID, "derive").get_attribute("disabled")
        )
    )
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert set(_pullback_math(browser)) == {"X", "W"}
    assert browser.find_element(By.ID, "params").get_attribute("value") == "s=2"
    assert "s=2" in browser.current_url.replace("%3D", "=")
    assert "verified" in _wait_verified(browser)
    assert _pullback_math(browser).keys() == {"X", "W"}
    browser.save_screenshot(str(tmp_path / "example.png"))

    # nothing was loaded from anywhere but this server
    host = urlsplit(server.url).netloc
    outside = [
        url
        for url in _requested_urls(browser)
        if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).netloc != host
    ]
    assert not outside, outside
    assert all(path.stat().st_size > 10_000 for path in tmp_path.glob("*.png"))


def screenshot(path: str) -> None:
    """The README's picture: the whole page for the seed with numbers, verified."""
    running = Server()
    driver = _browser()
    try:
        driver.get(running.url)
        _fill(driver, SEED, params="s=2", shapes="X=7x7, W=3x3")
        _derive(driver)
        _wait_verified(driver)
        driver.execute_script("window.scrollTo(0, 0)")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        picture = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": 1440, "height": height, "scale": 1},
            },
        )
        Path(path).write_bytes(base64.b64decode(picture["data"]))
    finally:
        driver.quit()
        running.stop()


if __name__ == "__main__":
    screenshot(sys.argv[1] if len(sys.argv) > 1 else "examples/serve-page.png")
