"""--batch: answer a task's uncached requests with one Message Batch, then read them from the cache.

Requests already cached are never resubmitted. The batch id is noted in the cache under a key made
of the requests' keys until its results are stored, so an interrupted run started again with the
same arguments polls the same batch instead of paying for a new one. Results that errored, were
canceled or expired are left out: the normal synchronous path then asks for them (and reports any
error). Backends without batches (the local model, openai: models) are simply called synchronously.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

from codegen_eval.models.backends import ModelRequest, ModelResponse, get_backend, is_openai_model
from codegen_eval.models.cache import CallCache, request_key

POLL_SECONDS = float(os.environ.get("CODEGEN_EVAL_BATCH_POLL_S", "10"))


def prefetch(
    requests: list[ModelRequest], cache: CallCache, accept: Callable[[ModelResponse], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> set[str]:
    """Store the answers of one batch for the uncached `requests`; returns the keys it stored.
    `on_progress(done, total)` hears how far the batch is at each poll."""
    if not requests or is_openai_model(requests[0].model):  # no batches: and its base URL is the run's, not known here
        return set()
    backend = get_backend(requests[0].model)
    if not hasattr(backend, "submit_batch"):
        return set()
    identity = backend.identity()
    pending = {request_key(r, identity): r for r in requests}
    pending = {key: r for key, r in pending.items() if cache.get(key) is None}
    if not pending:
        return set()
    note = "batch:" + hashlib.sha256("".join(sorted(pending)).encode()).hexdigest()
    batch_id = cache.get_note(note)
    if batch_id is None:
        batch_id = backend.submit_batch(list(pending.items()))
        cache.set_note(note, batch_id)
    while True:
        ended, done = backend.batch_progress(batch_id)
        if on_progress is not None:
            on_progress(done, len(pending))
        if ended:
            break
        time.sleep(POLL_SECONDS)
    fetched = set()
    for key, response in backend.batch_results(batch_id):
        if key in pending and response is not None and (accept is None or accept(response)):
            cache.put(key, pending[key], identity, response)
            fetched.add(key)
    cache.delete_note(note)
    return fetched


def key_of(request: ModelRequest) -> str:
    return request_key(request, get_backend(request.model).identity())
