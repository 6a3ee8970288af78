from __future__ import annotations

import pytest

from model_download.errors import InvalidReferenceError
from model_download.refs import check_relative_path, parse_reference


def test_parse_short_hub_and_revision() -> None:
    ref = parse_reference("hf:org/name@v1.0", include=("*.json",))
    assert (ref.hub, ref.id, ref.revision, ref.include) == (
        "huggingface",
        "org/name",
        "v1.0",
        ("*.json",),
    )
    assert str(ref) == "huggingface:org/name@v1.0"


def test_parse_without_revision_and_with_slashes_in_revision() -> None:
    assert parse_reference("huggingface:gpt2").revision is None
    assert parse_reference("hf:org/name@refs/pr/1").revision == "refs/pr/1"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("org/name", "has no hub"),
        (":org/name", "has no hub"),
        ("hf:", "model id is empty"),
        ("hf:   ", "model id is empty"),
        ("hf:../etc/passwd", "'..'"),
        ("hf:org/../x", "'..'"),
        ("hf:/abs/path", "looks like a file path"),
        ("hf:org//name", "invalid part"),
        ("hf:org/name@", "ends with '@'"),
        ("hf:org/name@../main", "revision '../main' is malformed"),
        ("hf:org/name@main branch", "is malformed"),
        ("hf:org/name@/main", "is malformed"),
        ("HUB WITH SPACE:org/name", "is not a hub name"),
    ],
)
def test_bad_references_are_rejected_with_a_reason(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError, match=fragment.replace("(", r"\(")) as info:
        parse_reference(text)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("path", ["", "/", "/abs", "C:/x", "a/../../b", ".."])
def test_unsafe_relative_paths(path: str) -> None:
    with pytest.raises(InvalidReferenceError):
        check_relative_path(path, "target folder")


def test_relative_path_is_normalised() -> None:
    assert check_relative_path("./team//models/", "target") == "team/models"
