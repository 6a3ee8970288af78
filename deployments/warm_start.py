"""Runs of the served flows start as forks of a warm process instead of new interpreters.

Prefect's runner starts each run of a flow it holds in memory in a process of its own, made
with multiprocessing's ``spawn``: a new interpreter that imports Prefect and the flow's modules
again before the run can report Running. On a 2-core machine that is 2-3 s, longer than a small
model's whole run. multiprocessing's ``forkserver`` imports those modules once, in a server
process, and forks each run from it in milliseconds; a run is still a process of its own, with
its own memory, that the runner can cancel and kill as before.

Prefect has no setting for the start method, so :func:`use_warm_starts` hands its
``run_flow_in_subprocess`` a multiprocessing whose ``spawn`` context is that forkserver. Prefect
does the rest as it always does (environment, settings, its control channel). Were a later
Prefect to start runs another way, the stand-in would simply go unused and runs would start
as Prefect starts them: slower, never wrong.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context
from typing import Any

logger = logging.getLogger(__name__)

#: Imported once by the fork server, so that no run pays for them: Prefect's engines and what
#: they import on first use, the flows, and what their first steps need (the store, the
#: plugins of the hubs most asked for). A name that does not import is passed over.
PRELOAD = [
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.concurrency.sync",
    "prefect.utilities.visualization",
    "fastapi.encoders",  # Prefect's engine encodes states with it, imported on first use
    "flows.download",
    "flows.pipeline",
    "deployments.recheck",
    "model_download.pull",
    "plugins.registry",
    "plugins.hubs.huggingface",
    "plugins.hubs.openvino",
]


class _WarmMultiprocessing:
    """What Prefect's flow engine sees as ``multiprocessing``: its spawn context forks warm."""

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        self._context = context

    def get_context(self, method: str | None = None) -> multiprocessing.context.BaseContext:
        if method in (None, "spawn"):
            return self._context
        return multiprocessing.get_context(method)

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing, name)


def use_warm_starts(preload: list[str] | None = None) -> bool:
    """Make this process's Prefect runner fork flow runs from a warm fork server.

    Call it before the runner starts. Returns whether it took effect (it does not where the
    platform has no ``forkserver``, or where Prefect no longer starts runs through
    ``run_flow_in_subprocess``).
    """
    from prefect import flow_engine

    if isinstance(getattr(flow_engine, "multiprocessing", None), _WarmMultiprocessing):
        return True
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    if not (
        callable(getattr(flow_engine, "run_flow_in_subprocess", None))
        and getattr(flow_engine, "multiprocessing", None) is multiprocessing
    ):
        logger.info("Prefect starts flow runs another way: runs start in new interpreters")
        return False
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD if preload is None else preload)
    flow_engine.multiprocessing = _WarmMultiprocessing(context)
    return True
