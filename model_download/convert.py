"""Convert a stored model and validate the result: the work behind ``--to openvino``.

Converted models are stored like downloaded ones, under the ``openvino-ir`` hub folder::

    openvino-ir/<source hub>/<source id>/<precision>-<key>/   the IR and its manifest
    openvino-ir/<source hub>/<source id>/@<precision>         the latest conversion at it

The key digests the source's content, the converter, its options and tool versions, so a repeat
finds the folder and any change converts again. fp32 is always converted first and kept: lower
precisions derive from it, and validation compares against it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_download.conversion import ConvertOptions, conversion_key, source_digest
from model_download.errors import (
    InsufficientMemoryError,
    InvalidReferenceError,
    ModelDownloadError,
    UnsupportedModelError,
)
from model_download.settings import Settings
from model_download.store.blobs import sha256_of
from model_download.store.manifest import MANIFEST_NAME, Manifest, ManifestFile
from model_download.store.store import ModelStore, StoredModel
from plugins.base import ConverterPlugin
from plugins.registry import Registry

logger = logging.getLogger(__name__)

CONVERTED_HUB = "openvino-ir"
# Exporting holds the framework model and the IR being built: about three times the weights.
_MEMORY_FACTOR = 3
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf")


def is_ir(manifest: Manifest) -> bool:
    return manifest.format == "openvino-ir"


def choose_converter(
    registry: Registry, manifest: Manifest, options: ConvertOptions
) -> ConverterPlugin:
    """The first available converter to ``options.to`` that accepts the model.

    Raises:
        UnsupportedModelError: none does; the message names the converters asked.
    """
    candidates = []
    for info in registry.plugins("converter"):
        plugin = info.instance
        if isinstance(plugin, ConverterPlugin) and plugin.target == options.to:
            candidates.append(plugin)
    for plugin in sorted(candidates, key=lambda p: p.priority):
        if plugin.accepts(manifest):
            return plugin
    names = ", ".join(p.name for p in candidates) or "none available"
    raise UnsupportedModelError(
        f"no converter to {options.to} accepts {manifest.hub}:{manifest.id} (asked: {names}); "
        "it needs a transformers config with weights, or ONNX files."
    )


def convert_stored(
    source: StoredModel,
    options: ConvertOptions,
    *,
    store: ModelStore,
    registry: Registry,
    settings: Settings,
) -> StoredModel:
    """The stored conversion of ``source`` at ``options``; converts only what is missing.

    A source already in OpenVINO IR is returned as it is: there is nothing to convert. A failed
    step leaves the store as it was: an fp32 base converted by this call for a lower precision
    is removed again when deriving that precision fails. The ``@<precision>`` name is not moved
    here but by validation, once the conversion passed it.

    Raises:
        InvalidReferenceError: an option does not apply to this model (published IR, say).
        ConversionError: the model cannot be converted; the message names it and what to try.
    """
    if is_ir(source.manifest):
        refuse_conversion_options(source, options)
        return source
    converter = choose_converter(registry, source.manifest, options)
    converter.check_options(source.manifest, options)
    if not converter.derives_precisions:
        converted, _ = _convert_once(
            source,
            converter,
            options,
            store,
            settings,
            lambda staging: converter.convert(source.path, source.manifest, options, staging),
        )
        return converted

    base_options = options.at("fp32")
    base, made_base = _convert_once(
        source,
        converter,
        base_options,
        store,
        settings,
        lambda staging: converter.convert(source.path, source.manifest, base_options, staging),
    )
    if options.precision == "fp32":
        return base
    try:
        return _derive(source, base, converter, options, store, settings)
    except BaseException:
        if made_base:  # made for this precision alone: the store goes back to what it was
            discard_conversion(base, store)
        raise


def _derive(
    source: StoredModel,
    base: StoredModel,
    converter: ConverterPlugin,
    options: ConvertOptions,
    store: ModelStore,
    settings: Settings,
) -> StoredModel:
    from plugins.converters.compress import compress_ir

    def produce(staging: Path) -> dict[str, Any]:
        record = compress_ir(base.path, options, staging, model_id=source.manifest.id)
        return _derived(base, record)

    return _convert_once(source, converter, options, store, settings, produce)[0]


#: Options that shape a conversion, by the flag that sets them: none applies to published IR.
_CONVERSION_ONLY = {
    "task": "--task",
    "group_size": "--group-size",
    "ratio": "--ratio",
    "sym": "--sym/--asym",
    "trust_remote_code": "--trust-remote-code",
    "calibration_data": "--dataset",
    "min_cosine": "--min-cosine",  # as published, it has no fp32 to be compared with
}


def refuse_conversion_options(source: StoredModel, options: ConvertOptions) -> None:
    """Refuse options that would change a conversion, for a model published in IR.

    Its precision is the one it was published at, whatever was asked: validation checks it as
    it is and reports that precision.

    Raises:
        InvalidReferenceError: naming the options given and why they cannot apply.
    """
    given = [flag for name, flag in _CONVERSION_ONLY.items() if getattr(options, name)]
    if options.sym is False:  # --asym: falsy, but given
        given.append(_CONVERSION_ONLY["sym"])
    if given:
        man = source.manifest
        raise InvalidReferenceError(
            f"{man.hub}:{man.id} is published in OpenVINO IR and is validated as published, "
            f"not converted: {', '.join(sorted(set(given)))} cannot apply to it; drop them, or "
            "pull the original model and convert that."
        )


def stored_conversions(
    source: StoredModel, options: ConvertOptions, *, store: ModelStore, registry: Registry
) -> set[str]:
    """Revisions of the conversions ``options`` needs (fp32 base included) already stored.

    Taken before a conversion and validation, so that :func:`discard_new_conversions` can put
    the store back as it was if they fail.
    """
    return {rev for rev, present in _needed(source, options, store, registry) if present}


def discard_new_conversions(
    source: StoredModel,
    options: ConvertOptions,
    before: set[str],
    *,
    store: ModelStore,
    registry: Registry,
) -> list[str]:
    """Remove the conversions ``options`` needs that were not stored ``before``; their names."""
    removed = []
    man = source.manifest
    # The conversion asked for first: while it is there, its base counts as in use.
    for revision, present in reversed(_needed(source, options, store, registry)):
        if not present or revision in before:
            continue
        stored = store.get(CONVERTED_HUB, f"{man.hub}/{man.id}", revision)
        if stored is not None and discard_conversion(stored, store):
            removed.append(stored.name)
    return removed


def discard_conversion(stored: StoredModel, store: ModelStore) -> bool:
    """Remove a conversion unless another stored conversion derives from it; whether it was."""
    man = stored.manifest
    users = [
        other.name
        for other in store.find(CONVERTED_HUB, man.id)
        if other.manifest.extra.get("conversion", {}).get("base") == man.revision
    ]
    if users:
        logger.info("keeping %s: %s derive from it", stored.name, ", ".join(users))
        return False
    logger.info("removing %s: the conversion it was made for failed", stored.name)
    store.delete(CONVERTED_HUB, man.id, man.revision)
    return True


def _needed(
    source: StoredModel, options: ConvertOptions, store: ModelStore, registry: Registry
) -> list[tuple[str, bool]]:
    # The conversion asked for and, when it derives from one, its fp32 base; each stored or not.
    if is_ir(source.manifest):
        return []
    try:
        converter = choose_converter(registry, source.manifest, options)
    except ModelDownloadError:
        return []  # nothing can be converted, so nothing will be stored
    wanted = [options]
    if converter.derives_precisions and options.precision != "fp32":
        wanted.insert(0, options.at("fp32"))
    found = []
    for asked in wanted:
        model_id, revision = _location(source, converter, asked)
        found.append((revision, store.get(CONVERTED_HUB, model_id, revision) is not None))
    return found


def _derived(base: StoredModel, record: dict[str, Any]) -> dict[str, Any]:
    """A compressed conversion's record: what the fp32 one knew (its task), its own settings."""
    inherited = {
        k: v
        for k, v in base.manifest.extra.get("conversion", {}).items()
        if k not in ("converter", "options")
    }
    return {**inherited, **record, "base": base.manifest.revision}


def find_conversion(
    source: StoredModel, converter: ConverterPlugin, options: ConvertOptions, store: ModelStore
) -> StoredModel | None:
    """The stored conversion for exactly these inputs, if it exists."""
    return store.get(CONVERTED_HUB, *_location(source, converter, options))


def _location(
    source: StoredModel, converter: ConverterPlugin, options: ConvertOptions
) -> tuple[str, str]:
    key = conversion_key(
        source.manifest,
        converter.name,
        options,
        converter.tool_versions(),
        converter.cache_inputs(source.manifest, options),
    )
    man = source.manifest
    return f"{man.hub}/{man.id}", f"{options.precision}-{key[:16]}"


def _convert_once(
    source: StoredModel,
    converter: ConverterPlugin,
    options: ConvertOptions,
    store: ModelStore,
    settings: Settings,
    produce: Callable[[Path], dict[str, Any]],
) -> tuple[StoredModel, bool]:
    """The stored conversion at ``options``, and whether this call made it."""
    model_id, revision = _location(source, converter, options)
    if found := store.get(CONVERTED_HUB, model_id, revision):
        return found, False

    with store.locked(CONVERTED_HUB, model_id, revision):
        if found := store.get(CONVERTED_HUB, model_id, revision):
            return found, False
        _check_memory(source, settings)
        staging = store.staging_dir(CONVERTED_HUB, model_id, revision)
        # A conversion cannot resume: whatever an earlier attempt left is discarded.
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        logger.info("converting %s to %s with %s", source.name, options.precision, converter.name)
        try:
            record = produce(staging)
            files = _adopt_all(store, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        manifest = Manifest(
            hub=CONVERTED_HUB,
            id=model_id,
            revision=revision,
            # No @<precision> name yet: validation gives it once the conversion passed.
            requested_revisions=[],
            format="openvino-ir",
            files=files,
            tools=converter.tool_versions(),
            extra={
                "source": _source_record(source),
                "conversion": {
                    "converter": converter.name,
                    "options": options.conversion_fields(),
                    **record,
                },
            },
        )
        return store.publish(staging, manifest), True


def _adopt_all(store: ModelStore, staging: Path) -> list[ManifestFile]:
    files = []
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        if path.name == MANIFEST_NAME:
            continue
        digest = sha256_of(path)
        files.append(
            ManifestFile(
                path=path.relative_to(staging).as_posix(),
                size=path.stat().st_size,
                sha256=digest,
            )
        )
        store.blobs.adopt(digest, path)
    return files


def _source_record(source: StoredModel) -> dict[str, Any]:
    man = source.manifest
    return {
        "hub": man.hub,
        "id": man.id,
        "revision": man.revision,
        "digest": source_digest(man),
        "path": str(source.path),
    }


def _check_memory(source: StoredModel, settings: Settings) -> None:
    weights = sum(f.size for f in source.manifest.files if f.path.endswith(_WEIGHTS))
    needed = weights * _MEMORY_FACTOR
    free = settings.convert_memory_limit or available_memory()
    if free is not None and needed > free:
        raise InsufficientMemoryError(
            f"converting {source.name} needs about {needed / 1e9:.1f} GB of memory and "
            f"{free / 1e9:.1f} GB are free: free some memory, convert fewer models at once, "
            "or use a larger machine (MODEL_DOWNLOAD_CONVERT_MEMORY_LIMIT sets the budget)."
        )


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
