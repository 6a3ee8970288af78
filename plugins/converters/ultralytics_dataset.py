"""A YOLO dataset YAML read for int8 calibration, without trusting it.

ultralytics downloads a dataset whose images are missing, and runs a YAML's ``download`` entry as
a script; the copy it is given has no such entry, an absolute root, and images that are here.
"""

from __future__ import annotations

from pathlib import Path

from model_download.errors import InvalidReferenceError


def safe_dataset_yaml(dataset: Path, work: Path, hint: str) -> Path:
    """A copy in ``work`` of a dataset YAML with no ``download`` entry and an absolute root.

    Args:
        dataset: the YAML file.
        work: a folder of the conversion's own, where the copy goes.
        hint: what to do instead, for messages.

    Raises:
        InvalidReferenceError: the YAML does not parse, names no images, or its images are not
            on this machine.
    """
    import yaml

    try:
        data = yaml.safe_load(dataset.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problem = (str(exc) or type(exc).__name__).splitlines()[0]
        raise InvalidReferenceError(f"{dataset} is not valid YAML ({problem}): {hint}") from exc
    images = (data.get("val") or data.get("train")) if isinstance(data, dict) else None
    named = [images] if isinstance(images, str) else images if isinstance(images, list) else []
    if (
        not named
        or not all(isinstance(x, str) and x for x in named)
        or not isinstance(data.get("path") or ".", str)
    ):
        raise InvalidReferenceError(
            f"{dataset} is not a dataset YAML naming its images (a 'val' or 'train' folder, file "
            f"list or list of them, under its 'path'): {hint}"
        )
    root = Path(data.get("path") or ".").expanduser()
    root = root if root.is_absolute() else dataset.parent / root
    missing = [str(root / x) for x in named if not (root / x).exists()]
    if missing:
        raise InvalidReferenceError(
            f"the calibration images of {dataset} are not here ({', '.join(missing)}): {hint}"
        )
    data = {k: v for k, v in data.items() if k != "download"}
    data.update(path=str(root.resolve()), val=images, train=data.get("train") or images)
    safe = work / "calibration.yaml"
    safe.write_text(yaml.safe_dump(data))
    return safe
