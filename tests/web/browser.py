"""The page at / driven in a real Chromium (Debian's `chromium` and `chromium-driver`) through
selenium, for tests/web/test_page.py and bench/page_latency.py.

    with chromium() as driver:
        page = Page(driver, url)
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NO_CHROMIUM = ("no Chromium here: the page's browser tests need Debian's `chromium` and "
               "`chromium-driver` (`make install` installs them where apt-get works)")
WAIT = 30.0

# Records every state the answer's text goes through, as the browser renders it (a poll from
# the test could miss states between two polls).
RECORD_ANSWER = """
window.answerStates = [];
const answer = document.getElementById('answer');
new MutationObserver(() => window.answerStates.push(answer.textContent))
  .observe(answer, {childList: true, characterData: true, subtree: true});
"""


def have_chromium() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[webdriver.Chrome]:
    """A headless Chromium (the machine's own binary: nothing is downloaded)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The page's controls, by the ids its template gives them."""

    def __init__(self, driver: webdriver.Chrome, url: str) -> None:
        self.driver = driver
        self.url = url

    def open(self, fragment: str = "") -> Page:
        self.driver.get(self.url + "/" + fragment)
        self.wait_for(lambda: self.driver.execute_script("return document.readyState")
                      == "complete")
        return self

    def element(self, element_id: str) -> WebElement:
        return self.driver.find_element(By.ID, element_id)

    def text(self, element_id: str) -> str:
        return str(self.driver.execute_script(
            "return document.getElementById(arguments[0]).textContent", element_id))

    def shown(self, element_id: str) -> bool:
        return self.element(element_id).is_displayed()

    def wait_for(self, condition: Callable[[], Any], timeout: float = WAIT) -> Any:
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
            lambda _driver: condition())

    def wait_text(self, element_id: str, part: str, timeout: float = WAIT) -> str:
        """The element's text once it holds `part`."""
        self.wait_for(lambda: part in self.text(element_id), timeout)
        return self.text(element_id)

    def record_answer(self) -> None:
        self.driver.execute_script(RECORD_ANSWER)

    def answer_states(self) -> list[str]:
        return list(self.driver.execute_script("return window.answerStates"))

    def forget_job(self) -> None:
        """Mark the job on show as old, so wait_finished() waits for the next one."""
        self.driver.execute_script("delete document.getElementById('job').dataset.streaming")

    def ask(self, question: str) -> None:
        self.forget_job()
        box = self.element("question")
        box.clear()
        box.send_keys(question)
        box.send_keys("\n")  # Enter asks

    def enter_key(self, key: str) -> None:
        self.wait_for(lambda: self.element("key-dialog").get_attribute("open") is not None)
        field = self.element("key-input")
        field.clear()
        field.send_keys(key)
        field.send_keys("\n")

    def wait_finished(self) -> None:
        """Until the job on show has its final record (its stream ended)."""
        self.wait_for(lambda: self.element("job").get_attribute("data-streaming") == "false")

    def tokens(self) -> list[str]:
        return self.text("answer").split()

    def wait_tokens(self, count: int) -> list[str]:
        self.wait_for(lambda: len(self.tokens()) >= count)
        return self.tokens()

    def recent_questions(self) -> list[str]:
        return [item.text.split("\n")[0]
                for item in self.driver.find_elements(By.CSS_SELECTOR, "#recent button")]

    def open_recent(self, question: str) -> None:
        for item in self.driver.find_elements(By.CSS_SELECTOR, "#recent button"):
            if item.text.split("\n")[0] == question:
                self.forget_job()
                item.click()
                return
        raise AssertionError(f"{question!r} is not among the recent jobs")
