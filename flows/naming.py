"""Flow run names that say which models a run is about, as the Prefect UI lists them."""

from __future__ import annotations

from collections.abc import Callable

from prefect.runtime import flow_run


def models_run_name(verb: str) -> Callable[[], str]:
    """A run-name function: ``"<verb> <first model id> and N more"``."""

    def name() -> str:
        models = flow_run.parameters.get("models") or []
        first = models[0] if models else {}
        model_id = first.get("id") if isinstance(first, dict) else getattr(first, "id", "")
        more = f" and {len(models) - 1} more" if len(models) > 1 else ""
        return f"{verb} {model_id}{more}"

    return name
