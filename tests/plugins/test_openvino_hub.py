"""The openvino hub: models published in IR, taken as they are, and hub searches."""

from __future__ import annotations

import pytest

from model_download import errors
from model_download.pull import download_resolved, resolve_reference
from model_download.refs import parse_reference
from model_download.runtime import get_registry, get_store
from tests.servers.hf_hub import FakeHub
from tests.test_cli import run

IR = {"openvino_model.xml": b"<net/>", "openvino_model.bin": b"\0" * 64, "config.json": b"{}"}


def pull(text: str):
    resolved = resolve_reference(parse_reference(text), get_registry())
    return download_resolved(resolved, store=get_store(), registry=get_registry())


def test_a_bare_name_is_the_openvino_organisations_ir(hub: FakeHub) -> None:
    hub.commit("OpenVINO/tiny-int8-ov", IR)
    stored = pull("openvino:tiny-int8-ov")
    assert stored.manifest.format == "openvino-ir"
    assert (stored.manifest.hub, stored.manifest.id) == ("openvino", "OpenVINO/tiny-int8-ov")
    assert get_store().verify(stored) == []


def test_a_repo_that_is_not_ir_is_refused_with_the_way_to_convert_it(hub: FakeHub) -> None:
    hub.commit("org/plain", {"config.json": b"{}", "model.safetensors": b"w" * 20_000})
    with pytest.raises(errors.UnsupportedModelError, match="pull hf:org/plain --to openvino"):
        pull("openvino:org/plain")
    assert get_store().list() == []


def test_search_pages_through_a_hub(hub: FakeHub) -> None:
    for name in ("org/bert-a", "org/bert-b", "org/bert-c", "other/bert-d", "org/gpt"):
        hub.commit(name, {"config.json": name.encode()})
    hf = get_registry().hub("huggingface")

    first = hf.search("bert", page=1, page_size=2)
    second = hf.search("bert", page=2, page_size=2)
    last = hf.search("bert", page=3, page_size=2)

    assert [m.id for m in first.models] == ["org/bert-a", "org/bert-b"] and first.has_more
    assert [m.id for m in second.models] == ["org/bert-c", "other/bert-d"] and not second.has_more
    assert last.models == []
    assert [m.id for m in hf.search(None, author="other").models] == ["other/bert-d"]
    assert first.models[0].revision  # the commit the hub lists


def test_search_filters_by_tag_and_lists_the_commit_and_date(hub: FakeHub) -> None:
    onnx = hub.commit("org/bert-onnx", {"model.onnx": b"onnx"}, model_tags=["onnx", "bert"])
    torch = hub.commit("org/bert-pt", {"model.bin": b"pt"}, model_tags=["pytorch", "bert"])
    hf = get_registry().hub("huggingface")

    [found] = hf.search("bert", tags=("onnx",)).models
    both = hf.search(None, tags=("bert",)).models

    # The real Hub lists a model's commit and last change only when asked to (expand).
    assert (found.id, found.revision, found.tags) == ("org/bert-onnx", onnx, ["onnx", "bert"])
    assert found.updated is not None and found.downloads == 0
    assert [(m.id, m.revision) for m in both] == [("org/bert-onnx", onnx), ("org/bert-pt", torch)]
    assert hf.search(None, tags=("bert", "pytorch")).models[0].id == "org/bert-pt"
    result = run("search", "hf", "--tag", "onnx")
    assert result.returncode == 0, result.stderr
    assert f"huggingface:org/bert-onnx@{onnx}" in result.stdout and "bert-pt" not in result.stdout


def test_the_openvino_hub_searches_its_organisation(hub: FakeHub) -> None:
    hub.commit("OpenVINO/a-ov", IR)
    hub.commit("org/a-ov", IR)
    found = get_registry().hub("openvino").search("a-ov")
    assert [m.id for m in found.models] == ["OpenVINO/a-ov"]


def test_search_from_the_command_line(hub: FakeHub) -> None:
    for name in ("org/bert-a", "org/bert-b", "org/bert-c"):
        hub.commit(name, {"config.json": name.encode()})
    result = run("search", "hf", "bert", "--page-size", "2")
    assert result.returncode == 0, result.stderr
    assert "huggingface:org/bert-a" in result.stdout and "--page 2" in result.stdout
    as_json = run("search", "hf", "bert", "--page", "2", "--page-size", "2", "--json")
    assert '"org/bert-c"' in as_json.stdout and '"has_more": false' in as_json.stdout
    refused = run("search", "nohub")
    assert refused.returncode == 1 and "unknown hub 'nohub'" in refused.stderr
