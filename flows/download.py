"""The download flow: many models at once, each pulled on its own, one failure isolated."""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.naming import models_run_name
from model_download.errors import ModelDownloadError
from model_download.refs import ModelReference, make_reference
from model_download.runtime import get_settings
from tasks.download import pull_model


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
def download_models(models: list[ModelSpec], concurrency: int | None = None) -> list[ModelOutcome]:
    """Download models into the store, several at once; a model's failure spares the others.

    Args:
        models: the models to download.
        concurrency: how many models download at once (default: the service's setting).
    """
    logger = get_run_logger()
    # Every reference is checked before anything starts: bad input fails the run at once.
    references = [spec.reference() for spec in models]
    limit = concurrency or get_settings().download_concurrency

    with ThreadPoolTaskRunner(max_workers=limit) as runner:
        futures = [runner.submit(pull_model, {"reference": ref}) for ref in references]
        states = [future.wait() or future.state for future in futures]

    outcomes = []
    for reference, state in zip(references, states, strict=True):
        if state.is_completed():
            stored = state.result()
            outcomes.append(
                ModelOutcome(
                    model=str(reference),
                    status="stored",
                    revision=stored.manifest.revision,
                    path=str(stored.path),
                    size=stored.manifest.total_size,
                    files=len(stored.manifest.files),
                )
            )
        else:
            error = state.result(raise_on_failure=False)
            outcomes.append(
                ModelOutcome(
                    model=str(reference), status="failed", error=str(error) or state.message
                )
            )
    _report(outcomes)

    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise ModelDownloadError(
            f"{len(failed)} of {len(outcomes)} models failed: "
            + "; ".join(f"{o.model}: {o.error}" for o in failed)
        )
    logger.info("stored %d models", len(outcomes))
    return outcomes


def _report(outcomes: list[ModelOutcome]) -> None:
    create_table_artifact(
        key="download-models",
        table=[o.model_dump(exclude_none=True) for o in outcomes],
        description="Models of this run: where each was stored, or why it failed.",
    )
