"""The page at / in a real Chromium against a real stack: real redis-servers, a real Celery
worker (fake pipeline, slow enough to watch the answer grow) and a real gunicorn, auth on.

The tests run in order in one browser session: the first enters the key, later ones reuse the
tab's sessionStorage and the jobs earlier ones made. The README's screenshot shows the real
model instead: scripts/screenshot.py takes it against `make run`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from client import Client
from shared import keys
from tests.support.proxy import CuttingProxy
from tests.support.stack import Stack, running_stack
from tests.web.browser import NO_CHROMIUM, Page, chromium, have_chromium

KEY = "page-key"
TOKENS = 40
ANSWER = [f"tok{i}" for i in range(TOKENS)]


def test_the_page_is_served_without_a_key_and_loads_nothing_from_elsewhere(
        client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '<label for="question">Question</label>' in html
    assets = ["/static/page.css", "/static/js/page.js", "/static/js/api.js",
              "/static/js/stream.js"]
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        text = response.get_data(as_text=True)
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, asset
    assert "http://" not in html and "https://" not in html


browser = pytest.mark.skipif(not have_chromium(), reason=NO_CHROMIUM)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("page"), keys=[KEY], tokens=TOKENS,
                       token_delay=0.1, web_env={"API_MAX_QUEUE_DEPTH": "1"}) as started:
        yield started


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator[Page]:
    with chromium() as driver:
        yield Page(driver, stack.url)


@pytest.fixture(scope="module")
def ragq(stack: Stack) -> Iterator[Client]:
    with Client(stack.url, KEY) as client:
        yield client


@pytest.fixture(scope="module")
def asked() -> dict[str, str]:
    """Questions the tests asked, by name, for the ones that come back to them."""
    return {}


def question() -> str:
    return f"Which port does service {uuid.uuid4().hex[:8]} listen on?"


@browser
@pytest.mark.integration
def test_a_wrong_key_is_a_readable_error_and_the_right_key_works(page: Page) -> None:
    page.open()
    page.enter_key("not-the-key")  # the list of recent jobs got a 401: the page asks
    assert page.wait_text("problem-text", "unknown X-API-Key") == \
        "The service did not accept the API key: unknown X-API-Key."
    assert "was refused" in page.wait_text("key-reason", "refused")
    page.enter_key(KEY)
    page.wait_for(lambda: not page.shown("problem"))
    assert page.wait_text("recent-empty", "None yet.")
    assert page.element("key-dialog").get_attribute("open") is None


@browser
@pytest.mark.integration
def test_the_answer_grows_token_by_token_then_the_sources(page: Page, asked: dict[str, str]
                                                          ) -> None:
    asked["first"] = question()
    page.record_answer()
    page.ask(asked["first"])
    page.wait_finished()
    assert page.text("job-status").startswith("Answered in")
    assert page.tokens() == ANSWER
    partial = [state for state in page.answer_states() if state and state.split() != ANSWER]
    assert len(set(partial)) >= 3, partial  # at least three renders before the whole answer
    for shorter, longer in zip(partial, partial[1:], strict=False):
        assert longer.startswith(shorter)
    sources = page.driver.find_elements(By.CSS_SELECTOR, "#sources > li")
    assert len(sources) == 3 and sources[0].text.startswith("Fake fake-0")
    passage = sources[0].find_element(By.TAG_NAME, "blockquote")
    assert not passage.is_displayed()
    sources[0].find_element(By.TAG_NAME, "summary").click()  # the passage, on demand
    assert passage.text == f"passage 0 for {asked['first']}"
    assert not page.shown("cache-badge") and not page.shown("cancel-button")


@browser
@pytest.mark.integration
def test_a_repeated_question_shows_the_cache_badge(page: Page, asked: dict[str, str],
                                                   tmp_path: Path) -> None:
    page.ask(asked["first"])
    page.wait_finished()
    badge = page.wait_text("cache-badge", "From the cache")
    assert badge == ("From the cache: the same question (similarity 1.00), "
                     f"“{asked['first']}”")
    assert page.wait_text("job-status", "Answered from the cache.")
    assert page.tokens() == ANSWER
    page.driver.find_element(By.CSS_SELECTOR, "#sources summary").click()
    page.wait_for(lambda: len(page.recent_questions()) >= 2)
    shot = tmp_path / "page.png"
    assert page.driver.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000


@browser
@pytest.mark.integration
def test_cancel_stops_the_job_and_keeps_the_partial_answer(page: Page, ragq: Client) -> None:
    asking = question()
    page.ask(asking)
    page.wait_text("job-question", asking)
    page.wait_tokens(3)
    page.element("cancel-button").click()
    assert page.wait_text("job-status", "Cancelled") == "Cancelled: the partial answer is kept."
    job = ragq.jobs(limit=1)["jobs"][0]
    assert job["status"] == "cancelled"
    assert page.tokens() == job["result"]["answer"].split()
    assert 3 <= len(page.tokens()) < TOKENS and page.tokens() == ANSWER[:len(page.tokens())]


@browser
@pytest.mark.integration
def test_a_reload_lists_the_job_and_replays_it(page: Page, asked: dict[str, str]) -> None:
    page.open()  # a fresh load, no job in the address
    page.wait_for(lambda: asked["first"] in page.recent_questions())
    assert not page.shown("job")
    page.open_recent(asked["first"])
    page.wait_finished()
    assert page.text("job-question") == asked["first"]
    assert page.tokens() == ANSWER
    assert len(page.driver.find_elements(By.CSS_SELECTOR, "#sources > li")) == 3
    page.driver.refresh()  # the job is in the address: a reload opens it again
    page.wait_finished()
    assert page.tokens() == ANSWER


@browser
@pytest.mark.integration
def test_a_job_whose_events_were_trimmed_shows_its_record(page: Page, stack: Stack,
                                                          ragq: Client) -> None:
    asking = question()
    job = ragq.wait(ragq.submit(asking)["id"])
    stack.broker.client().xtrim(keys.job_events(job["id"]), maxlen=3)  # as MAXLEN ~ would
    page.open()
    page.wait_for(lambda: asking in page.recent_questions())
    page.open_recent(asking)  # the stream closes 4410: the page reads the record
    page.wait_finished()
    assert page.tokens() == ANSWER and page.text("job-status").startswith("Answered in")
    assert len(page.driver.find_elements(By.CSS_SELECTOR, "#sources > li")) == 3


@browser
@pytest.mark.integration
def test_a_dropped_socket_resumes_and_loses_nothing(page: Page, stack: Stack) -> None:
    with CuttingProxy(stack.web.port) as proxy:
        behind = Page(page.driver, proxy.url).open()
        behind.enter_key(KEY)  # another port is another origin, with its own sessionStorage
        asking = question()
        behind.ask(asking)
        behind.wait_text("job-question", asking)
        behind.wait_tokens(5)
        proxy.cut()
        behind.wait_text("job-status", "reconnecting")
        behind.wait_tokens(20)
        proxy.cut()
        behind.wait_finished()
        assert proxy.cuts == 2
    assert behind.tokens() == ANSWER  # every token once, in order


@browser
@pytest.mark.integration
def test_queue_position_and_a_full_queue_counts_down(page: Page, ragq: Client) -> None:
    page.open()
    running = ragq.submit(question())  # the worker is busy with it
    next(event for event in ragq.stream(running["id"]) if event["type"] == "token")
    asking = question()
    page.ask(asking)
    page.wait_text("job-question", asking)
    status = page.wait_text("job-status", "Queued: position 1")
    assert "estimated wait about" in status  # from the earlier jobs' run times
    queued_page_job = ragq.jobs(limit=1)["jobs"][0]
    page.ask(question())  # API_MAX_QUEUE_DEPTH=1: refused
    assert page.wait_text("problem-text", "busy").startswith("The service is busy: ")
    assert "You can ask again in" in page.wait_text("problem-retry", "again in")
    assert not page.element("ask-button").is_enabled()
    ragq.cancel(running["id"])
    ragq.cancel(queued_page_job["id"])


@browser
@pytest.mark.integration
def test_readable_at_phone_width_and_every_field_labelled(page: Page) -> None:
    page.driver.set_window_size(390, 844)
    page.open()
    page.wait_for(lambda: len(page.recent_questions()) > 0)
    overflow = page.driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    unlabelled = page.driver.execute_script(
        "return [...document.querySelectorAll('input, textarea')]"
        ".filter(field => field.labels.length === 0).map(field => field.id)")
    assert unlabelled == []
    focused: list[str] = []  # a fresh load: Tab starts at the top of the page
    for _ in range(5):
        ActionChains(page.driver).send_keys(Keys.TAB).perform()
        focused.append(page.driver.switch_to.active_element.get_attribute("id")
                       or page.driver.switch_to.active_element.text)
        if focused[-1] == "question":
            break
    assert focused == ["Skip to the question", "key-button", "question"]
    page.driver.set_window_size(1280, 900)
