"""The download flow: many models at once, each pulled on its own, one failure isolated."""

# No `from __future__ import annotations`: a served run gets this flow's function pickled by
# value, away from this module's globals, and Prefect validates the run's parameters against
# its annotations, which must therefore be the types themselves, not names to look up here.

from typing import Annotated, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.naming import models_run_name
from model_download.errors import ModelDownloadError
from model_download.refs import ModelReference, make_reference
from model_download.runtime import get_registry, get_settings
from tasks.download import pull_model

#: Models downloaded at once: bounded, so the UI's form shows the range and a typo cannot ask
#: for none (or for thousands of threads).
Concurrency = Annotated[int, Field(ge=1, le=64)]


class ModelSpec(BaseModel):
    """One model to download, as the Prefect UI form and API requests give it."""

    hub: str = Field("huggingface", description="Hub name: huggingface (or hf).")
    id: str = Field(description="Model id on the hub, e.g. 'org/name'.", min_length=1)
    revision: str | None = Field(None, description="Branch, tag or commit (default: main).")
    include: list[str] = Field(default_factory=list, description="Only files matching these.")
    exclude: list[str] = Field(default_factory=list, description="Skip files matching these.")

    def reference(self) -> ModelReference:
        return make_reference(
            hub=self.hub,
            id=self.id,
            revision=self.revision,
            include=tuple(self.include),
            exclude=tuple(self.exclude),
        )


class ModelOutcome(BaseModel):
    """What happened to one model of a run."""

    model: str
    status: Literal["stored", "failed"]
    revision: str | None = None
    path: str | None = None
    size: int | None = None
    files: int | None = None
    error: str | None = None


@flow(name="download-models", flow_run_name=models_run_name("download"))
def download_models(
    models: list[ModelSpec], concurrency: Concurrency | None = None
) -> list[ModelOutcome]:
    """Download models into the store, several at once; a model's failure spares the others.

    Args:
        models: the models to download.
        concurrency: how many models download at once, 1 to 64 (default: the service's
            setting).
    """
    logger = get_run_logger()
    # Every reference is checked, by its hub's rules too, before anything starts: bad input
    # fails the run at once, with the reason.
    registry = get_registry()
    references = [registry.hub(r.hub).validate(r) for r in (spec.reference() for spec in models)]
    limit = concurrency if concurrency is not None else get_settings().download_concurrency

    with ThreadPoolTaskRunner(max_workers=limit) as runner:
        futures = [runner.submit(pull_model, {"reference": ref}) for ref in references]
        states = [future.wait() or future.state for future in futures]

    outcomes = [_outcome(ref, state) for ref, state in zip(references, states, strict=True)]
    _report(outcomes)

    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise ModelDownloadError(
            f"{len(failed)} of {len(outcomes)} models failed: "
            + "; ".join(f"{o.model}: {o.error}" for o in failed)
        )
    logger.info("stored %d models", len(outcomes))
    return outcomes


def _outcome(reference: ModelReference, state: State) -> ModelOutcome:
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        message = str(error) or state.message
        return ModelOutcome(model=str(reference), status="failed", error=message)
    stored = state.result()
    return ModelOutcome(
        model=str(reference),
        status="stored",
        revision=stored.manifest.revision,
        path=str(stored.path),
        size=stored.manifest.total_size,
        files=len(stored.manifest.files),
    )


def _report(outcomes: list[ModelOutcome]) -> None:
    create_table_artifact(
        key="download-models",
        table=[o.model_dump(exclude_none=True) for o in outcomes],
        description="Models of this run: where each was stored, or why it failed.",
    )
