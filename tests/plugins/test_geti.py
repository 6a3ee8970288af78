"""Pulls from a loopback Intel Geti server (tests/servers/geti_api.py), through the geti plugin."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from model_download import errors
from model_download.archives import ArchiveLimits, UnsafeArchiveError, extract_all, list_members
from model_download.pull import download_resolved, resolve_reference
from model_download.refs import parse_reference
from model_download.settings import Settings
from model_download.store.store import ModelStore, StoredModel
from plugins.hubs.geti import GetiHub
from plugins.hubs.geti_client import TLSVerificationError
from plugins.registry import Registry
from tests.servers.geti_api import FakeGeti
from tests.servers.geti_content import Group, Model, Optimized, Project

GROUP = "card-detection/ATSS"
OTHER_ID = "0" * 24


@dataclass
class Site:
    server: FakeGeti
    project: Project
    group: Group
    model: Model
    fp32: Optimized
    fp16: Optimized


def pull(text: str, **patterns: tuple[str, ...]) -> StoredModel:
    """A pull as a fresh process makes it: settings, registry and plugin built anew."""
    settings = Settings()
    registry = Registry(settings)
    resolved = resolve_reference(parse_reference(text, **patterns), registry)
    return download_resolved(resolved, store=_store(), registry=registry)


def _store() -> ModelStore:
    return ModelStore(Settings().models_dir)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if not p.is_dir()] if root.exists() else []


@pytest.fixture(scope="module")
def ir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """A tiny valid OpenVINO IR (Parameter -> MatMul -> Result), saved at FP32 and FP16."""
    ov = pytest.importorskip("openvino", reason="the openvino extra builds the served IR")
    import numpy as np
    import openvino.opset13 as ops

    folder = tmp_path_factory.mktemp("ir")
    data = ops.parameter([1, 4], ov.Type.f32, name="input")
    weights = ops.constant(np.arange(8, dtype=np.float32).reshape(4, 2))
    model = ov.Model([ops.result(ops.matmul(data, weights, False, False))], [data], "tiny")
    saved = {}
    for precision in ("FP32", "FP16"):
        xml = folder / f"{precision}.xml"
        ov.save_model(model, xml, compress_to_fp16=precision == "FP16")
        saved[precision] = {
            "openvino.xml": xml.read_bytes(),
            "openvino.bin": xml.with_suffix(".bin").read_bytes(),
        }
    return saved


def _serve(server: FakeGeti, ir: dict[str, dict[str, bytes]]) -> Site:
    project = server.add_project("Card Detection")
    server.add_project("Other Project")
    group = server.add_group(project, "ATSS")
    model = server.add_model(group, {"weights.pth": os.urandom(4096)})
    fp32 = server.add_optimized(model, "OpenVINO", "FP32", ir["FP32"])
    fp16 = server.add_optimized(model, "OpenVINO", "FP16", ir["FP16"])
    server.add_optimized(model, "ONNX", "FP32", {"model.onnx": b"onnx bytes"})
    return Site(server, project, group, model, fp32, fp16)


@pytest.fixture
def geti(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ir: dict[str, dict[str, bytes]]
) -> Iterator[Site]:
    """A Geti server on loopback with one trained model; GETI_HOST and GETI_TOKEN point at it."""
    with FakeGeti(tmp_path / "geti") as server:
        monkeypatch.setenv("GETI_HOST", server.url)
        monkeypatch.setenv("GETI_TOKEN", server.token)
        yield _serve(server, ir)


def test_optimized_export_is_unpacked_verified_and_runs(
    geti: Site, ir: dict[str, dict[str, bytes]]
) -> None:
    import numpy as np
    import openvino as ov

    stored = pull(f"geti:{GROUP}@optimized-FP16")

    manifest = stored.manifest
    assert manifest.revision == f"{geti.model.id}-{geti.fp16.id}"
    assert {f.path: f.sha256 for f in manifest.files} == {
        path: _sha(data) for path, data in ir["FP16"].items()
    }
    assert manifest.format == "openvino-ir"
    assert _store().verify(stored) == []
    assert (
        _store().resolve_ref("geti", GROUP, "latest-optimized-openvino-fp16") == manifest.revision
    )
    [export] = geti.server.exports()
    assert export.query == {"model_only": "true"}
    assert not list(_store().root.rglob("*.zip"))  # the export is gone once unpacked
    compiled = ov.Core().compile_model(stored.path / "openvino.xml", "CPU")
    result = compiled(np.ones((1, 4), dtype=np.float32))[0]
    assert result.tolist() == [[12.0, 16.0]]


def test_base_export_by_project_and_group_ids(geti: Site) -> None:
    stored = pull(f"geti:{geti.project.id}/{geti.group.id}@latest-base")

    assert stored.manifest.revision == f"{geti.model.id}-base"
    assert [(f.path, f.sha256) for f in stored.manifest.files] == [
        ("weights.pth", _sha(geti.model.files["weights.pth"]))
    ]
    assert stored.manifest.format is None
    assert _store().verify(stored) == []
    [export] = geti.server.exports()
    assert export.path.endswith(f"/models/{geti.model.id}/export")


def test_exportable_code_shares_its_weights_with_the_model_export(geti: Site) -> None:
    pinned = f"{geti.model.id}-{geti.fp32.id}"
    model_only = pull(f"geti:{GROUP}@{pinned}")
    code = pull(f"geti:{GROUP}@{pinned}-code")

    assert code.manifest.revision == f"{pinned}-code"
    owner = pull(f"geti:{GROUP}@latest-{geti.fp32.id}")  # as the v1 API's optimized_model_id
    assert owner.path == model_only.path
    paths = {f.path for f in code.manifest.files}
    assert {"model/model.xml", "model/model.bin", "python/demo.py", "README.md"} <= paths
    assert code.manifest.format == "openvino-ir"
    assert [r.query for r in geti.server.exports()] == [
        {"model_only": "true"},
        {"model_only": "false"},
    ]  # and none for the third pull: stored already
    # One content, one blob: the code's weights are the model export's, not a copy.
    same = (code.path / "model/model.bin").stat().st_ino
    assert same == (model_only.path / "openvino.bin").stat().st_ino


def test_repeat_sends_no_archive_request(geti: Site) -> None:
    first = pull(f"geti:{GROUP}")
    assert len(geti.server.exports()) == 1
    geti.server.clear_log()

    again = pull(f"geti:{GROUP}")

    assert again.path == first.path
    assert geti.server.exports() == []
    assert geti.server.log  # the metadata was asked for: 'latest' may have moved
    assert _store().verify(again) == []


def test_latest_follows_a_newly_trained_model(geti: Site, ir: dict[str, dict[str, bytes]]) -> None:
    first = pull(f"geti:{GROUP}")
    newer = geti.server.add_model(geti.group, {"weights.pth": b"retrained"})
    optimized = geti.server.add_optimized(newer, "OpenVINO", "FP32", ir["FP32"])

    second = pull(f"geti:{GROUP}")

    revision = second.manifest.revision
    assert revision == f"{newer.id}-{optimized.id}" != first.manifest.revision
    assert _store().resolve_ref("geti", GROUP, "latest-optimized-openvino-fp32") == revision
    # Same IR bytes in both models: stored once.
    assert (second.path / "openvino.bin").stat().st_ino == (
        first.path / "openvino.bin"
    ).stat().st_ino


def test_partial_pull_then_full_pull(geti: Site) -> None:
    partial = pull(f"geti:{GROUP}", include=("*.xml",))
    assert [f.path for f in partial.manifest.files] == ["openvino.xml"]

    full = pull(f"geti:{GROUP}")

    assert [f.path for f in full.manifest.files] == ["openvino.bin", "openvino.xml"]
    assert len(geti.server.exports()) == 2  # the stored part could not tell what else there is
    with pytest.raises(errors.RemoteFileNotFoundError, match="loosen the patterns"):
        pull(f"geti:{GROUP}", include=("*.gguf",))


def test_patterns_matching_nothing_leave_no_export_behind(geti: Site) -> None:
    with pytest.raises(errors.RemoteFileNotFoundError, match="openvino.xml: loosen the patterns"):
        pull(f"geti:{GROUP}", include=("*.gguf",))

    assert len(geti.server.exports()) == 1  # fetched, to list what it holds
    assert _files_under(_store().root) == []  # and not kept for a model that is not stored


def _hostile_zip(kind: str, outside: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("openvino.xml", b"<net/>")  # a good member: refused all the same
        if kind == "parent":
            archive.writestr("../../evil.txt", b"escaped")
        elif kind == "absolute":
            archive.writestr(zipfile.ZipInfo(str(outside)), b"escaped")
        else:
            link = zipfile.ZipInfo("evil-link")
            link.create_system = 3
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(link, str(outside))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("parent", "climbs out of the target folder"),
        ("absolute", "is an absolute path"),
        ("symlink", "is a link, not a regular file"),
    ],
)
def test_hostile_archive_is_refused_whole(geti: Site, tmp_path: Path, kind: str, why: str) -> None:
    outside = Path("/tmp") / f"geti-evil-{uuid.uuid4().hex}"
    geti.fp32.export = _hostile_zip(kind, outside)

    with pytest.raises(UnsafeArchiveError, match=why) as info:
        pull(f"geti:{GROUP}")

    assert isinstance(info.value, errors.IntegrityError)
    assert _files_under(_store().root) == []
    assert not outside.exists()
    assert not list(tmp_path.rglob("evil*"))


def test_wrong_or_missing_token(geti: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GETI_TOKEN", "geti_pat_not_the_right_one")
    with pytest.raises(errors.UnauthorizedError, match="rejected GETI_TOKEN") as info:
        pull(f"geti:{GROUP}")
    assert "geti_pat_not_the_right_one" not in str(info.value)
    assert [r.status for r in geti.server.log] == [401]

    monkeypatch.delenv("GETI_TOKEN")
    with pytest.raises(errors.UnauthorizedError, match="GETI_TOKEN is not set"):
        pull(f"geti:{GROUP}")


def test_unknown_project_group_model_and_variant(geti: Site) -> None:
    with pytest.raises(errors.ModelNotFoundError, match="no project 'nothing'.*'Card Detection'"):
        pull("geti:nothing/ATSS")
    with pytest.raises(errors.ModelNotFoundError, match="no model group 'yolo'.*'ATSS'"):
        pull("geti:card-detection/yolo")
    with pytest.raises(errors.RevisionNotFoundError, match=f"no model {OTHER_ID}.*v1"):
        pull(f"geti:{GROUP}@{OTHER_ID}-base")
    with pytest.raises(errors.RevisionNotFoundError, match="no optimized model openvino-int8"):
        pull(f"geti:{GROUP}@int8")
    with pytest.raises(errors.RevisionNotFoundError, match="onnx-fp32, openvino-fp16"):
        pull(f"geti:{GROUP}@{geti.model.id}-{OTHER_ID}")
    with pytest.raises(errors.InvalidReferenceError, match="code for OpenVINO models only"):
        pull(f"geti:{GROUP}@onnx-code")
    assert geti.server.exports() == []
    assert _files_under(_store().root) == []


def test_tls_is_verified_against_the_ca_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ir: dict[str, dict[str, bytes]]
) -> None:
    with FakeGeti(tmp_path / "tls-geti", tls=True) as server:
        _serve(server, ir)
        monkeypatch.setenv("GETI_HOST", server.url)
        monkeypatch.setenv("GETI_TOKEN", server.token)
        with pytest.raises(TLSVerificationError, match=r"127\.0\.0\.1.*set GETI_CA_BUNDLE"):
            pull(f"geti:{GROUP}")
        assert server.log == []  # refused before a request, token included, was sent

        monkeypatch.setenv("GETI_CA_BUNDLE", str(server.ca_bundle))
        stored = pull(f"geti:{GROUP}")
    assert _store().verify(stored) == []


def test_token_does_not_follow_a_redirect_to_another_host(geti: Site, tmp_path: Path) -> None:
    with FakeGeti(tmp_path / "elsewhere", token="another-token") as elsewhere:
        geti.server.redirect_exports = elsewhere.url  # another port: another origin
        with pytest.raises(errors.UnauthorizedError):
            pull(f"geti:{GROUP}")
    [followed] = elsewhere.log
    assert followed.path.endswith("/export") and not followed.sent_key


def test_unreachable_host(geti: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GETI_HOST", "http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(errors.HubUnreachableError, match=r"cannot reach http://127\.0\.0\.1:9"):
        pull(f"geti:{GROUP}")


def test_reference_syntax() -> None:
    hub = GetiHub(Settings())
    model, optimized = "a" * 24, "b" * 24

    def spelled(text: str) -> str | None:
        return hub.validate(parse_reference(text)).revision

    assert spelled("geti:p/g") == "latest-optimized-openvino-fp32"
    assert spelled("geti:p/g@optimized-FP16") == "latest-optimized-openvino-fp16"
    assert spelled("geti:p/g@code-xai-fp16") == "latest-optimized-openvino-fp16-xai-code"
    assert spelled("geti:p/g@onnx") == "latest-optimized-onnx-fp32"
    assert spelled("geti:p/g@base") == "latest-base"
    assert spelled(f"geti:p/g@{model}") == f"{model}-optimized-openvino-fp32"
    assert spelled(f"geti:p/g@{model}-{optimized}-code") == f"{model}-{optimized}-code"
    assert spelled(f"geti:p/g@{optimized}-latest") == f"latest-{optimized}"
    for text, why in [
        ("geti:p/g@optimised", "neither a Geti id"),
        ("geti:p/g@base-fp16", "base export is the training framework's"),
        ("geti:p/g@fp16-int8", "gives the precision twice"),
        (f"geti:p/g@latest-{model}-{optimized}", "give 'latest' or a model id"),
        (f"geti:p/g@{model}-{optimized}-fp16", "fixes format and precision"),
        ("geti:project", "write 'project/model group'"),
        ("geti:a/b/c", "write 'project/model group'"),
    ]:
        with pytest.raises(errors.InvalidReferenceError, match=why):
            spelled(text)


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("kind", "link", "why"),
    [
        (tarfile.LNKTYPE, "../../etc/passwd", "is a link"),
        (tarfile.SYMTYPE, "model.bin", "is a link"),  # even one that stays inside
        (tarfile.CHRTYPE, "", "is a device, pipe or socket"),
        (tarfile.FIFOTYPE, "", "is a device, pipe or socket"),
    ],
)
def test_tar_links_and_devices_are_refused(
    tmp_path: Path, kind: bytes, link: str, why: str
) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(_tar([(_member("model.bin"), b"w"), (_member("odd", kind, link), b"")]))

    with pytest.raises(UnsafeArchiveError, match=why):
        extract_all(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model.tar.gz"]


def test_archives_unpack_whole_within_their_caps(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(
        _tar([(_member("./model/a.txt"), b"a" * 100), (_member("model/b.txt"), b"b")])
    )

    members = extract_all(archive, tmp_path / "out")

    assert [(m.path, m.size) for m in members] == [("model/a.txt", 100), ("model/b.txt", 1)]
    assert (tmp_path / "out/model/a.txt").read_bytes() == b"a" * 100
    with pytest.raises(UnsafeArchiveError, match="past 50 bytes"):
        list_members(archive, ArchiveLimits(max_total_size=50))
    with pytest.raises(UnsafeArchiveError, match="cap of 1 members"):
        list_members(archive, ArchiveLimits(max_members=1))
