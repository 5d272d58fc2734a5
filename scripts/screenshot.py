"""The README's picture of the page, taken against a running stack with the real model.

    make run          # in another terminal; wait for "ragq is ready"
    .venv/bin/python scripts/screenshot.py [--url http://127.0.0.1:8000] [--question ...]

Asks the question on the page in headless Chromium (Debian's), waits for the answer to finish,
opens the first source's passage and writes docs/page.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.web.browser import Page, chromium  # noqa: E402

QUESTION = "Which port does the API listen on by default?"
ANSWER_SECONDS = 300.0  # a cold CPU worker's first answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "page.png")
    args = parser.parse_args()
    with chromium(1280, 900) as driver:
        page = Page(driver, args.url).open()
        page.ask(args.question)
        page.wait_for(lambda: page.element("job").get_attribute("data-streaming") == "false",
                      ANSWER_SECONDS)
        driver.execute_script("document.querySelector('#sources details')?.setAttribute('open', '')")  # noqa: E501
        driver.save_screenshot(str(args.out))
        print(f"wrote {args.out}: {page.text('answer').strip()!r}")


if __name__ == "__main__":
    main()
