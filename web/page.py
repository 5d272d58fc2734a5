"""The page at `/`: ask, watch the answer stream in, cancel, reopen recent jobs (a browser's
front door to the job API; templates/page.html, static/js/). No key is needed to load it: its
script asks for one on the first 401 and keeps it in the tab's sessionStorage."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("page", __name__)


@bp.get("/")
def page() -> str:
    """The page; everything else it does goes through the documented API."""
    return render_template("page.html")
