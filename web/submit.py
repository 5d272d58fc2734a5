"""Every submitting route's one path to a job, top to bottom.

`submit()` answers a question with the caller's job:

1. exact cache lookup, in the caller's key's scope (CACHE_SHARING): a hit becomes a finished
   job of the caller's (`cached: true`, the similarity, the original question when the caller
   asked it), stored with its events in one round trip; nothing is queued;
2. admission: a miss is refused (429 with Retry-After) while the queue, or the caller's key's
   share of it, is at its limit; checked before the query is embedded, so a refusal costs no
   CPU;
3. semantic cache lookup (embeds the query), a hit answered as in step 1;
4. breaker: refused while the window's spend, or the key's, is at its limit;
5. single-flight claim: an identical miss already in flight is attached to instead;
6. reserve the job's estimated cost on the breaker (the window's and the key's);
7. create the job record, admitted under the queue limits in the same atomic step (the check
   of step 2 only reads), and send its task, carrying the query embedding so the worker can
   cache the answer without embedding it again (a failure gives the reservation back);
8. bind the claim to the new job.

Logs one INFO line per job: "cache hit", "job attached" or "job queued", with the name of the
caller's key (never the key).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery import Celery
from flask import g

from shared import metrics
from shared.admission import Bounds
from shared.breaker import RESERVED_FIELD, WINDOW_FIELD, Breaker, job_estimate_eur
from shared.cache import (
    JOB_EMBEDDING_FIELD,
    JOB_TENANT_FIELD,
    Scope,
    encode_vector,
    scope_for,
    tenant_of,
)
from shared.collections import DEFAULT
from shared.collections import JOB_FIELD as COLLECTION_FIELD
from shared.error_types import ErrorType
from shared.errors import BrokerUnavailable, JobNotFound, QueueRefused
from shared.jobs import METRIC_FIELDS, JobRecord, JobStore
from shared.settings import Settings
from shared.tasks import send_generate
from web.auth import current_tenant
from web.collections import collection_scope
from web.request_ids import current_request_id
from web.resources import Resources, resources
from web.semantic_cache import CacheLookup
from web.singleflight import Claim, SingleFlight, fingerprint
from web.tenants import Tenant

log = logging.getLogger(__name__)

CLAIM_TRIES = 3  # stale claims stepped over before a miss goes on without single-flight


def submit(query: str, top_k: int | None, collection: str = DEFAULT) -> JobRecord:
    """The caller's job for `query` about `collection`: a finished one from the cache, an
    identical one in flight, or a new queued one (the scope of both is the collection's
    current version: docs/collections.md)."""
    found = resources()
    tenant = current_tenant()
    k = top_k or found.settings.pipeline.top_k
    scope = scope_for(found.pipeline_info(), k, tenant_of(found.settings, g.owner))
    if collection != DEFAULT:
        scope = collection_scope(scope, collection)

    cache_on = found.settings.cache.enabled
    exact = found.cache.lookup_exact(query, scope, asker=g.owner) if cache_on else None
    if exact is not None:
        return answer_from_cache(found.store, query, k, exact, tenant.name)
    found.admission.check(g.owner, tenant.max_queued)  # before the query is embedded
    lookup = CacheLookup(hit=False)
    if cache_on:
        lookup = found.cache.lookup_semantic(query, scope, asker=g.owner)
        if lookup.hit:
            return answer_from_cache(found.store, query, k, lookup, tenant.name)
    found.breaker.check(owner=g.owner, owner_limit_eur=tenant.budget_eur)
    claim, record = claim_or_attach(found, fingerprint(query, scope, g.owner))
    if record is not None:
        log.info("job attached", extra={"job_id": record["id"], "top_k": k, "key": tenant.name})
        return record
    try:
        reservation = Reservation.make(found.breaker, found.settings, tenant)
        record = queue_reserved(found, query, k, scope, lookup, reservation, collection)
    except BaseException:
        found.single_flight.release(claim)
        raise
    found.single_flight.bind(claim, record["id"])
    log.info("job queued", extra={"job_id": record["id"], "top_k": k, "key": tenant.name})
    return record


def answer_from_cache(
    store: JobStore, query: str, top_k: int, lookup: CacheLookup, key_name: str
) -> JobRecord:
    """The caller's job answered from the cache: stored succeeded, with its events (status,
    done), so its id, links, listing and stream work like any other job's."""
    similarity = round(lookup.similarity, 4)
    job_metrics: dict[str, Any] = dict.fromkeys(METRIC_FIELDS)
    job_metrics.update(cost_eur=0.0, queue_wait_s=0.0)  # view() adds the cache's fields
    record = store.create_answered(
        owner=g.owner, query=query, top_k=top_k, request_id=current_request_id(),
        result=lookup.payload or {}, metrics=job_metrics,
        cache={"similarity": similarity, "question": lookup.question, "path": lookup.path},
        key_name=key_name,
    )
    log.info("cache hit", extra={"job_id": record["id"], "top_k": top_k, "key": key_name,
                                 "cache_path": lookup.path})
    return record


def claim_or_attach(found: Resources, key: str) -> tuple[Claim, JobRecord | None]:
    """Our claim on fingerprint `key` (no record), or an identical in-flight job to attach to."""
    flight: SingleFlight = found.single_flight
    for _ in range(CLAIM_TRIES):
        claim = flight.claim(key)
        if claim.holder is None:
            return claim, None
        record = _visible(found.store, claim.holder)
        if flight.attach(claim, record):
            return claim, record
    return Claim(key), None


def _visible(store: JobStore, job_id: str) -> JobRecord | None:
    try:
        return store.get(job_id, owner=g.owner)
    except JobNotFound:
        return None


@dataclass(frozen=True)
class Reservation:
    """A job's estimated cost, held on the breaker until the job's final status settles it."""

    estimate_eur: float
    window: int
    owner: str

    @classmethod
    def make(cls, breaker: Breaker, settings: Settings, tenant: Tenant) -> Reservation | None:
        """Reserve the estimate on the window and the key's share of it (BudgetExceeded if a
        limit was reached meanwhile); None when neither the breaker nor a key budget is on
        (check() reserves nothing then: nothing to settle)."""
        if not settings.breaker.enabled and tenant.budget_eur <= 0:
            return None
        estimate = job_estimate_eur(settings.pipeline, settings.breaker)
        window = breaker.window_start()
        breaker.check(reserve_eur=estimate, owner=tenant.owner, owner_limit_eur=tenant.budget_eur)
        return cls(estimate, window, tenant.owner)

    def fields(self) -> dict[str, str]:
        """The job hash fields from which its final transition settles the reservation."""
        return {RESERVED_FIELD: repr(self.estimate_eur), WINDOW_FIELD: str(self.window)}

    def give_back(self, breaker: Breaker) -> None:
        """Settle at no cost: the job was never queued. The broker is maybe what failed: then
        the estimate stays spent until its window ends (counted and logged, not raised)."""
        try:
            breaker.charge(0.0, reserved_eur=self.estimate_eur, reserved_window=self.window,
                           owner=self.owner)
        except BrokerUnavailable as error:
            metrics.ERRORS.labels(type=ErrorType.RESERVATION_GIVE_BACK).inc()
            log.warning("cannot give a reservation back; it stays spent until its window ends",
                        extra={"reserved_eur": self.estimate_eur, "error": str(error)})


def queue_reserved(
    found: Resources, query: str, top_k: int, scope: Scope, lookup: CacheLookup,
    reservation: Reservation | None, collection: str = DEFAULT,
) -> JobRecord:
    """Create the job, admitted atomically under the queue limits, and send its task with what
    the worker needs: the reservation to settle, the query embedding and the cache scope's
    tenant to cache the answer where it was looked up. A submission
    that fails gives the reservation back; a refused admission is QueueFull."""
    internal: dict[str, str] = {}
    if lookup.embedding is not None:
        internal[JOB_EMBEDDING_FIELD] = encode_vector(lookup.embedding)
        internal[JOB_TENANT_FIELD] = scope.tenant
    if reservation is not None:
        internal.update(reservation.fields())
    if collection != DEFAULT:
        internal[COLLECTION_FIELD] = collection
    try:
        return submit_job(found.store, found.celery, owner=g.owner, query=query, top_k=top_k,
                          request_id=current_request_id(), internal=internal,
                          bounds=found.admission.bounds(current_tenant().max_queued),
                          key_name=current_tenant().name)
    except BaseException as error:
        if reservation is not None:
            reservation.give_back(found.breaker)
        if isinstance(error, QueueRefused):
            raise found.admission.refusal(error) from error
        raise


def submit_job(
    store: JobStore, celery: Celery, *, owner: str, query: str, top_k: int, request_id: str,
    internal: dict[str, str] | None = None, bounds: Bounds | None = None, key_name: str = "",
) -> JobRecord:
    """Create the job record and send its task at the job's level in the fair order across keys
    (the jobs of its owner queued ahead of it); the returned record is queued.

    `internal`: extra fields for the worker, kept in the job hash but never shown to clients
    (the cache's query embedding). `bounds`: the queue limits it is admitted under, atomically
    (QueueRefused when one is reached; none by default). BrokerUnavailable when the broker
    Redis cannot be reached (the record is then removed).
    """
    record, level = store.create_admitted(owner=owner, query=query, top_k=top_k,
                                          request_id=request_id, bounds=bounds or Bounds(),
                                          key_name=key_name)
    try:
        if internal:
            store.set_internal(record["id"], internal)
        send_generate(celery, record["id"], request_id, priority=level)
    except BrokerUnavailable:
        store.discard(record["id"], owner)
        raise
    metrics.JOBS_SUBMITTED.inc()
    return record
