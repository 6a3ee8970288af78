"""The scheduled re-check: download any new revision of MODEL_DOWNLOAD_RECHECK_MODELS.

``make run`` serves it with the models as parameters (shown in the Prefect UI); prefect.yaml
deploys it to the work pool without them, so a worker reads the setting when it runs, and asks
this module for the cron at deploy time::

    python -m deployments.recheck cron     # MODEL_DOWNLOAD_RECHECK_CRON (checks the models)
    python -m deployments.recheck active   # "true" when there are models to re-check
"""

# No `from __future__ import annotations`: a served run gets this flow's function pickled by
# value, away from this module's globals, and Prefect validates the run's parameters against
# its annotations, which must therefore be the types themselves, not names to look up here.

import sys

from prefect import flow, get_run_logger

from deployments.serve import recheck_references
from flows.download import ModelOutcome, ModelSpec, download_models
from model_download.errors import InvalidReferenceError

#: The flow's name; its deployment is named the same (recheck/recheck).
RECHECK = "recheck"


def recheck_models() -> list[ModelSpec]:
    """MODEL_DOWNLOAD_RECHECK_MODELS as flow parameters.

    Raises:
        InvalidReferenceError: an entry is not ``hub:id[@revision]``, naming it and the setting.
    """
    return [
        ModelSpec(hub=ref.hub, id=ref.id, revision=ref.revision) for ref in recheck_references()
    ]


@flow(name=RECHECK)
def recheck(models: list[ModelSpec] | None = None) -> list[ModelOutcome]:
    """Download any new revision of ``models`` (default: MODEL_DOWNLOAD_RECHECK_MODELS here).

    Resolving always asks the hub, and a model whose branch has not moved is a cache hit, so
    only new revisions are downloaded.
    """
    specs = recheck_models() if models is None else models
    if not specs:
        get_run_logger().info("nothing to re-check: MODEL_DOWNLOAD_RECHECK_MODELS is empty")
        return []
    return download_models(models=specs)


def _main(argv: list[str]) -> int:
    from model_download.runtime import get_settings

    if argv not in (["cron"], ["active"]):
        print("usage: python -m deployments.recheck cron|active", file=sys.stderr)
        return 2
    try:
        specs = recheck_models()
    except InvalidReferenceError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(get_settings().recheck_cron if argv == ["cron"] else str(bool(specs)).lower())
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
