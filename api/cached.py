"""What the store already holds for a request: the answer of a request that needs no run.

Reads only the folder of the model asked (its ``@<branch>`` link, or its few revisions), never
the whole store, so a cached request stays cheap however many models are stored.
"""

from __future__ import annotations

import contextlib
from urllib.parse import unquote

from flows.pipeline import PipelineOutcome, PipelineSpec
from model_download.convert import choose_converter, find_conversion, is_ir
from model_download.errors import ModelDownloadError
from model_download.refs import ModelReference
from model_download.store.manifest import Manifest
from model_download.store.store import ModelStore, StoredModel
from plugins.registry import Registry


def latest_stored(
    store: ModelStore, hub: str, model_id: str, revision: str | None
) -> StoredModel | None:
    """The stored model ``revision`` names (a commit, or a branch or tag via its ``@`` link);
    without one, the newest download of the model. ``None`` if there is none."""
    if revision is not None:
        found = store.find(hub, model_id, revision)
        return found[0] if found else None
    folder = store.root / hub / model_id
    newest: StoredModel | None = None
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            # Links are '@<name>', work files '.<name>': only revision folders hold a model.
            if entry.name.startswith(("@", ".")) or not entry.is_dir():
                continue
            stored = store.get(hub, model_id, unquote(entry.name))
            if stored is None:
                continue
            if newest is None or stored.manifest.created_at > newest.manifest.created_at:
                newest = stored
    return newest


def covers(manifest: Manifest, reference: ModelReference) -> bool:
    """Whether a stored model holds every file ``reference`` selects.

    A pull without patterns took every file; a pull with the same patterns took the same
    files. Anything else (a partial pull from the command line) may lack some.
    """
    wanted = (sorted(reference.include), sorted(reference.exclude))
    return any(
        (not s.include and not s.exclude) or (sorted(s.include), sorted(s.exclude)) == wanted
        for s in manifest.selections
    )


def stored_result(spec: PipelineSpec, store: ModelStore, registry: Registry) -> StoredModel | None:
    """The stored result this request asks for, if it is complete and validated where asked."""
    reference = registry.hub(spec.hub).validate(spec.reference())
    source = latest_stored(store, reference.hub, reference.id, reference.revision)
    if source is None or not covers(source.manifest, reference):
        return None
    if spec.convert is None:
        return source
    if spec.ovms is not None:
        return None  # the servable folder is laid out by a run
    if is_ir(source.manifest):
        converted: StoredModel | None = source  # validated as published
    else:
        try:
            converter = choose_converter(registry, source.manifest, spec.convert)
            converted = find_conversion(source, converter, spec.convert, store)
        except ModelDownloadError:
            return None  # a run reports why, with its stage
    record = converted.manifest.extra.get("validation", {}) if converted else {}
    ok = record.get("passed") and record.get("device") == spec.convert.device
    return converted if ok else None


def answer_from_store(
    spec: PipelineSpec, result: StoredModel, exported: str | None
) -> PipelineOutcome:
    """What a run would have reported for ``result``: its job shows the same paths and sizes."""
    outcome = PipelineOutcome(
        model=str(spec.reference()), status="done", stage="done", exported=exported
    )
    if spec.convert is None:
        outcome.stored, outcome.size = str(result.path), result.manifest.total_size
        return outcome
    record = result.manifest.extra.get("validation", {})
    outcome.converted, outcome.converted_size = str(result.path), result.manifest.total_size
    outcome.precision, outcome.device = record.get("precision"), record.get("device")
    outcome.device_used, outcome.validated = record.get("device_used"), True
    return outcome
