"""GET /v1/usage: the caller's own figures, by its API key (never another key's)."""

from __future__ import annotations

from flask import Response, jsonify
from flask.blueprints import BlueprintSetupState
from flask_openapi3 import APIBlueprint, Tag

from shared import metrics
from shared.series import FINAL_STATUSES
from web.auth import PROBLEMS, SECURITY, authenticate, current_tenant
from web.resources import EXTENSION, Resources, resources
from web.schemas import UsageOut
from web.tenants import ANONYMOUS

bp = APIBlueprint("usage", __name__, url_prefix="/v1", abp_tags=[Tag(name="usage")],
                  abp_security=SECURITY, abp_responses=PROBLEMS)
bp.before_request(authenticate)


@bp.record_once
def _zero_key_series(state: BlueprintSetupState) -> None:
    """Every configured key's usage series start at 0 (a dashboard shows 0, not "no data")."""
    found: Resources = state.app.extensions[EXTENSION]
    names = found.keyring.names() if found.settings.auth.enabled else [ANONYMOUS]
    for name in names:
        metrics.KEY_CACHE_HITS.labels(key=name)
        metrics.KEY_COST.labels(key=name)
        for status in FINAL_STATUSES:
            metrics.KEY_JOBS.labels(key=name, status=status)


@bp.get("/usage", responses={200: UsageOut})
def usage() -> Response:
    """The caller's key: its jobs (queued and running now, by final status since the broker
    started), cache hits, tokens and cost; this window's spend against its budget; its limits."""
    found, tenant = resources(), current_tenant()
    breaker = found.breaker
    window = {"spend_eur": round(breaker.owner_spend(tenant.owner), 6),
              "budget_eur": tenant.budget_eur or None,
              "seconds": breaker.settings.window_seconds,
              "resets_in_seconds": breaker.retry_after()}
    limits = {"max_queued": tenant.max_queued or None,
              "rate_per_second": tenant.rate_per_second or None,
              "burst": tenant.burst if tenant.rate_per_second else None}
    return jsonify({"key": tenant.name, **found.store.usage(tenant.owner), "window": window,
                    "limits": limits})
