"""How a Geti reference names a model: the revision syntax, and finding things by name or id.

A Geti reference is ``geti:<project>/<model group>@<revision>``. Project and model group are
each a name or an id; a name matches exactly, then ignoring case, then as a "slug" (runs of
anything but letters and digits read as one '-'), so ``card-detection`` finds "Card Detection".

The revision is tokens joined by '-', in any order (keywords ignore case)::

    latest | <model id>             which trained model of the group (default: latest version)
    base | optimized                the training framework's weights, or an optimized model
    openvino | onnx                 optimized model format (default openvino)
    fp32 | fp16 | int8              optimized model precision (default fp32)
    xai                             the optimized variant with the explainability head
    code                            Geti's exportable code (model + demo) instead of the model only
    <model id>-<optimized model id> exactly that optimized model
    latest-<optimized model id>     that optimized model, of whichever model of the group owns it

Ids are Geti's 24 hex digits. Examples: ``@optimized-FP16``, ``@latest-base``,
``@65f0c0ffee0123456789abcd-int8``, ``@65f0...abcd-66a1...0042-code``. The canonical form (what
the store records as the name asked for) spells every default out:
``latest-optimized-openvino-fp32``. A resolved revision is ``<model id>-base`` or
``<model id>-<optimized model id>[-code]``: itself a valid revision, pinning exactly that export.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from model_download.errors import InvalidReferenceError, RevisionNotFoundError

_ID = re.compile(r"^[0-9a-f]{24}$")
_KEYWORDS = {
    "latest": "model",
    "base": "export",
    "optimized": "export",
    "openvino": "format",
    "onnx": "format",
    "fp32": "precision",
    "fp16": "precision",
    "int8": "precision",
    "xai": "xai",
    "code": "code",
}
# Statuses of an optimized model whose weights exist (Geti lists failed and running ones too).
_TRAINED = frozenset({"SUCCESS", "NOT_IMPROVED", "TRAINED_NO_STATS"})

Item = dict[str, Any]


@dataclass(frozen=True)
class Selection:
    """What a revision asks for."""

    model: str = "latest"
    export: str = "optimized"
    optimized_id: str | None = None
    format: str = "openvino"
    precision: str = "fp32"
    xai: bool = False
    code: bool = False

    def canonical(self) -> str:
        """The revision spelled with every default, so equal requests share one name."""
        if self.export == "base":
            return f"{self.model}-base"
        if self.optimized_id:
            parts = [self.model, self.optimized_id]
        else:
            parts = [self.model, "optimized", self.format, self.precision]
            parts += ["xai"] if self.xai else []
        return "-".join(parts + (["code"] if self.code else []))


def parse_revision(text: str | None) -> Selection:
    """Read a revision as the module docstring describes it.

    Raises:
        InvalidReferenceError: an unknown word, a word twice, or options that do not go together.
    """
    given: dict[str, str] = {}
    ids: list[str] = []
    for token in (text or "latest").lower().split("-"):
        if _ID.match(token):
            ids.append(token)
            continue
        kind = _KEYWORDS.get(token)
        if kind is None:
            raise InvalidReferenceError(
                f"revision {text!r}: {token!r} is neither a Geti id (24 hex digits) nor one of "
                f"{', '.join(_KEYWORDS)}; e.g. 'latest-optimized-openvino-fp16'."
            )
        if kind in given:
            raise InvalidReferenceError(f"revision {text!r} gives the {kind} twice.")
        given[kind] = token
    return _combine(text, given, ids)


def _combine(text: str | None, given: dict[str, str], ids: list[str]) -> Selection:
    if "model" in given:
        ids.insert(0, "latest")  # 'latest-<id>': the id is an optimized model's
    if len(ids) > 2:
        raise InvalidReferenceError(
            f"revision {text!r}: give 'latest' or a model id, then optionally an optimized "
            "model's id ('<model id>-<optimized model id>')."
        )
    export = given.get("export", "optimized")
    options = [given[k] for k in ("format", "precision", "xai", "code") if k in given]
    if export == "base" and (len(ids) == 2 or options):
        raise InvalidReferenceError(
            f"revision {text!r}: a base export is the training framework's own weights; "
            "format, precision, xai, code and an optimized model id apply to optimized exports."
        )
    if len(ids) == 2 and set(given) - {"model", "export", "code"}:
        raise InvalidReferenceError(
            f"revision {text!r}: an optimized model id fixes format and precision already; "
            "leave those out."
        )
    return Selection(
        model=ids[0] if ids else "latest",
        export=export,
        optimized_id=ids[1] if len(ids) == 2 else None,
        format=given.get("format", "openvino"),
        precision=given.get("precision", "fp32"),
        xai="xai" in given,
        code="code" in given,
    )


def slug(text: str) -> str:
    """Lower case, with every run of other characters than letters and digits made one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")


def pick(items: list[Item], key: str, kind: str, where: str) -> Item | None:
    """The one item whose id or name is ``key`` (see the module docstring), or None.

    Raises:
        InvalidReferenceError: several items match as closely.
    """
    tests: list[Callable[[Item], bool]] = [
        lambda item: str(item.get("id")) == key,
        lambda item: str(item.get("name")) == key,
        lambda item: str(item.get("name")).casefold() == key.casefold(),
        lambda item: slug(str(item.get("name"))) == slug(key),
    ]
    for test in tests:
        found = [item for item in items if test(item)]
        if len(found) > 1:
            ids = ", ".join(f"{item.get('name')!r} ({item.get('id')})" for item in found)
            raise InvalidReferenceError(
                f"{len(found)} {kind}s of {where} match {key!r}: use the id of the one you "
                f"mean: {ids}."
            )
        if found:
            return found[0]
    return None


def names(items: list[Item], limit: int = 10) -> str:
    """A short list of the items' names and ids, for messages."""
    shown = [f"{item.get('name')!r} ({item.get('id')})" for item in items[:limit]]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return (", ".join(shown) or "none") + more


def pick_model(group: Item, selection: Selection, where: str) -> Item:
    """The model of ``group`` the selection names: by id, or the latest version not purged.

    Raises:
        RevisionNotFoundError: no such model, none trained, or its weights were purged.
    """
    models: list[Item] = group.get("models") or []
    if selection.model == "latest":
        return newest_first(group, where)[0]
    model = next((m for m in models if m.get("id") == selection.model), None)
    if model is None:
        listed = ", ".join(f"v{m.get('version')} {m.get('id')}" for m in models) or "none"
        raise RevisionNotFoundError(
            f"{where} has no model {selection.model}: its models are {listed} (or use 'latest')."
        )
    if _purged(model):
        raise RevisionNotFoundError(
            f"model {selection.model} of {where} was purged, its weights are gone: pick another "
            "version, or 'latest'."
        )
    return model


def newest_first(group: Item, where: str) -> list[Item]:
    """The group's models that still have weights, the latest version first.

    Raises:
        RevisionNotFoundError: there is none.
    """
    usable = [m for m in group.get("models") or [] if not _purged(m)]
    if not usable:
        raise RevisionNotFoundError(
            f"{where} has no trained model (or only purged ones): train one in Geti first."
        )
    return sorted(
        usable,
        key=lambda m: (int(m.get("version") or 0), str(m.get("creation_date"))),
        reverse=True,
    )


def pick_optimized(details: Item, selection: Selection, where: str) -> Item:
    """The optimized model of a model's details that the selection asks for.

    Raises:
        RevisionNotFoundError: none matches; the message lists what there is.
        InvalidReferenceError: exportable code asked of a format Geti has none for.
    """
    every: list[Item] = details.get("optimized_models") or []
    ready = [
        o for o in every if o.get("model_status", "SUCCESS") in _TRAINED and o.get("precision")
    ]
    if selection.optimized_id:
        found = next((o for o in ready if o.get("id") == selection.optimized_id), None)
    else:
        found = max(
            (o for o in ready if _wanted(selection) in _variants(o)),
            key=lambda o: int(o.get("version") or 0),
            default=None,
        )
    if found is None:
        offered = sorted({v for o in ready for v in _variants(o)}) or ["none yet"]
        wanted = selection.optimized_id or _wanted(selection)
        raise RevisionNotFoundError(
            f"{where} has no optimized model {wanted}: it has {', '.join(offered)}. Ask for one "
            "of these (e.g. @latest-optimized-openvino-fp16), or optimize the model in Geti."
        )
    if selection.code and str(found.get("model_format")).casefold() != "openvino":
        raise InvalidReferenceError(
            f"Geti exports code for OpenVINO models only, and {found.get('id')} of {where} is "
            f"{found.get('model_format')}: leave 'code' out."
        )
    return found


def _variants(optimized: Item) -> set[str]:
    """How the optimized model would be asked for: 'openvino-fp16', 'onnx-fp32-xai'..."""
    fmt = str(optimized.get("model_format", "")).casefold()
    xai = "-xai" if optimized.get("has_xai_head") else ""
    return {f"{fmt}-{str(p).casefold()}{xai}" for p in optimized.get("precision") or []}


def _wanted(selection: Selection) -> str:
    return f"{selection.format}-{selection.precision}" + ("-xai" if selection.xai else "")


def _purged(model: Item) -> bool:
    return bool((model.get("purge_info") or {}).get("is_purged"))
