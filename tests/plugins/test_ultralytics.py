"""Ultralytics YOLO weights: pulled through the hub plugin from loopback, exported, validated.

The "release assets" are served by the fake Hugging Face hub: its ``/{repo}/resolve/{tag}/{file}``
URLs have the shape of GitHub's ``/{repo}/releases/download/{tag}/{file}``, and with
``redirect_lfs`` it sends downloads to another origin as GitHub sends them to its CDN. The weights
are a real, untrained yolov8n built offline from the package's model YAML.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# ultralytics reads these once, at import: no downloads, no pip, settings in a throw-away folder.
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "0"
os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="model-download-yolo-")
pytest.importorskip("ultralytics")

from model_download import errors
from model_download.conversion import ConvertOptions
from model_download.convert import CONVERTED_HUB, convert_stored
from model_download.pull import download_resolved, resolve_reference
from model_download.refs import parse_reference
from model_download.settings import Settings
from model_download.store.store import ModelStore, StoredModel
from model_download.validate import validate_stored
from plugins import registry as plugin_registry
from plugins.converters.ultralytics_openvino import check_against_pytorch
from plugins.converters.validation import validate_ir
from plugins.hubs.ultralytics import NAME_RULE, asset_revision, default_base_url
from tests.servers.hf_hub import FakeHub

RELEASE = "v8.4.0"
IMGSZ = 64
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class Service:
    """A store and a registry whose ultralytics plugins read ``settings``."""

    def __init__(self, root: Path, **settings: object) -> None:
        self.settings = Settings(models_dir=root, **settings)
        self.store = ModelStore(root)
        self.registry = plugin_registry.Registry(self.settings)

    def pull(self, model: str) -> StoredModel:
        resolved = resolve_reference(parse_reference(model), self.registry)
        return download_resolved(resolved, store=self.store, registry=self.registry)

    def convert(self, source: StoredModel, precision: str, **options: object) -> StoredModel:
        return convert_stored(
            source,
            ConvertOptions(precision=precision, **options),
            store=self.store,
            registry=self.registry,
            settings=self.settings,
        )


@pytest.fixture(scope="module", autouse=True)
def no_internet() -> Iterator[list[str]]:
    """Fail any name lookup beyond loopback, and remember it: ultralytics must stay offline."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK:
            asked.append(name)
            raise socket.gaierror(f"{name}: this test allows loopback only")
        return real(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", loopback_only)
        yield asked
    assert asked == [], f"something tried to go online: {asked}"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("weights") / "yolov8n.pt"
    YOLO("yolov8n.yaml").save(path)  # built from the package's YAML: no download
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A YOLO dataset of the two images ultralytics ships, each with a person box."""
    from ultralytics.utils import ASSETS

    root = tmp_path_factory.mktemp("dataset")
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for image in ("bus.jpg", "zidane.jpg"):
        shutil.copyfile(ASSETS / image, root / "images" / "val" / image)
        (root / "labels" / "val" / image).with_suffix(".txt").write_text("0 0.5 0.5 0.3 0.6\n")
    yaml = root / "data.yaml"
    yaml.write_text("path: .\ntrain: images/val\nval: images/val\nnames:\n  0: person\n")
    return yaml


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> Iterator[FakeHub]:
    with FakeHub(tmp_path_factory.mktemp("assets"), redirect_lfs=True) as server:
        server.commit("ultralytics/assets", {"yolov8n.pt": weights}, tag=RELEASE)
        yield server


@pytest.fixture(scope="module")
def base_url(assets: FakeHub) -> str:
    return f"{assets.url}/ultralytics/assets/resolve/{RELEASE}"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, base_url: str, dataset: Path) -> Service:
    root = tmp_path_factory.mktemp("store")
    return Service(
        root, ultralytics_base_url=base_url, ultralytics_dataset=dataset, ultralytics_imgsz=IMGSZ
    )


@pytest.fixture(scope="module")
def source(service: Service) -> StoredModel:
    return service.pull("ultralytics:yolov8n")


# -- the hub ---------------------------------------------------------------------------------


def test_default_base_url_is_the_release_the_package_downloads_from() -> None:
    from ultralytics.utils.downloads import GITHUB_ASSETS_REPO, attempt_download_asset

    release = inspect.signature(attempt_download_asset).parameters["release"].default
    assert default_base_url() == (
        f"https://github.com/{GITHUB_ASSETS_REPO}/releases/download/{release}"
    )


def test_pull_stores_the_weights_verified_and_pinned(
    source: StoredModel, service: Service, weights: Path, base_url: str
) -> None:
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    manifest = source.manifest
    assert (manifest.hub, manifest.id) == ("ultralytics", "yolov8n")
    assert [(f.path, f.size, f.sha256) for f in manifest.files] == [
        ("yolov8n.pt", weights.stat().st_size, sha256)
    ]
    # After the redirect the "CDN" answers with the content's ETag, as GitHub's does.
    assert manifest.revision == asset_revision(f"{base_url}/yolov8n.pt", {"ETag": f'"{sha256}"'})
    assert service.store.verify(source) == []


def test_repeat_pull_sends_no_file_request(
    source: StoredModel, service: Service, assets: FakeHub
) -> None:
    assets.clear_log()

    again = service.pull("ultralytics:yolov8n.pt")

    assert again.path == source.path
    assert assets.file_requests() == []
    assert [r.method for r in assets.requests if r.file] == ["HEAD", "HEAD"]  # hub, then CDN


def test_a_replaced_asset_is_a_new_revision(service: Service, assets: FakeHub) -> None:
    assets.commit("ultralytics/assets", {"yolo11n-cls.pt": b"first upload"}, tag=RELEASE)
    first = service.pull("ultralytics:yolo11n-cls")
    assets.commit("ultralytics/assets", {"yolo11n-cls.pt": b"second upload"}, tag=RELEASE)

    second = service.pull("ultralytics:yolo11n-cls")

    assert second.manifest.revision != first.manifest.revision
    assert (second.path / "yolo11n-cls.pt").read_bytes() == b"second upload"
    with pytest.raises(errors.RevisionNotFoundError, match="changed since"):
        service.pull(f"ultralytics:yolo11n-cls@{first.manifest.revision}")


def test_unpublished_name_is_model_not_found(service: Service) -> None:
    with pytest.raises(errors.ModelNotFoundError, match="404") as caught:
        service.pull("ultralytics:yolo11x-obb")
    assert NAME_RULE in str(caught.value)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("ultralytics:resnet50", "not an Ultralytics YOLO name"),
        ("ultralytics:yolo11n@v8.3", "no branches or tags"),
    ],
)
def test_bad_names_and_revisions_are_refused(service: Service, model: str, message: str) -> None:
    with pytest.raises(errors.InvalidReferenceError, match=message):
        service.pull(model)


def test_unreachable_server(tmp_path: Path) -> None:
    service = Service(tmp_path / "store", ultralytics_base_url="http://127.0.0.1:9/assets")
    with pytest.raises(errors.HubUnreachableError, match="cannot reach"):
        service.pull("ultralytics:yolov8n")


# -- the converter ---------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_export_validates_and_matches_pytorch(
    service: Service, source: StoredModel, dataset: Path, precision: str
) -> None:
    converted = service.convert(source, precision)

    record = converted.manifest.extra["conversion"]
    assert record["converter"] == "ultralytics-openvino"
    assert (record["precision"], record["task"], record["imgsz"]) == (precision, "detect", [64, 64])
    assert ("calibration_data" in record) == (precision == "int8")
    files = sorted(p.name for p in converted.path.iterdir() if not p.name.startswith("."))
    assert files == ["metadata.yaml", "yolov8n.bin", "yolov8n.xml"]  # no work folder, no .pt
    assert validate_ir(converted.path / "yolov8n.xml").passed
    check = check_against_pytorch(source.path, converted.path, record["imgsz"])
    assert check["passed"], check
    assert check["ir_shapes"] == check["pytorch_shapes"] == [[1, 84, 84]]
    validated, reports = validate_stored(
        converted, ConvertOptions(precision=precision), store=service.store
    )
    assert all(r.passed for r in reports)
    recorded = validated.manifest.extra["validation"]
    assert recorded["checks"]["shapes_match"] and recorded["passed"]  # the PyTorch comparison


def test_an_int8_request_exports_int8_only(base_url: str, dataset: Path, tmp_path: Path) -> None:
    fresh = Service(
        tmp_path / "store",
        ultralytics_base_url=base_url,
        ultralytics_dataset=dataset,
        ultralytics_imgsz=IMGSZ,
    )

    converted = fresh.convert(fresh.pull("ultralytics:yolov8n"), "int8")

    folder = converted.path.parent
    assert folder == fresh.store.root / CONVERTED_HUB / "ultralytics" / "yolov8n"
    # No fp32 (nor fp16) IR on the way: int8 is exported from the weights, not derived.
    assert {p.name.lstrip("@").split("-")[0] for p in folder.iterdir()} == {"int8"}
    irs = [m for m in fresh.store.list() if m.manifest.hub == CONVERTED_HUB]
    assert [m.manifest.extra["conversion"]["precision"] for m in irs] == ["int8"]


def test_each_precision_is_its_own_export(service: Service, source: StoredModel) -> None:
    sizes = {
        p: (service.convert(source, p).path / "yolov8n.bin").stat().st_size
        for p in ("fp32", "fp16", "int8")
    }
    assert sizes["fp16"] < 0.6 * sizes["fp32"]
    assert sizes["int8"] < 0.8 * sizes["fp16"]


def test_fp32_through_convert_stored_is_the_same_conversion(
    service: Service, source: StoredModel
) -> None:
    direct = service.convert(source, "fp32")
    stored = convert_stored(
        source,
        ConvertOptions(precision="fp32"),
        store=service.store,
        registry=service.registry,
        settings=service.settings,
    )
    assert stored.path == direct.path


def test_int8_without_a_dataset_says_how_and_writes_nothing(
    service: Service, source: StoredModel, tmp_path: Path
) -> None:
    bare = Service(service.store.root, ultralytics_imgsz=IMGSZ)
    before = sorted(m.path for m in bare.store.find(CONVERTED_HUB, "ultralytics/yolov8n"))

    with pytest.raises(errors.InvalidReferenceError, match="MODEL_DOWNLOAD_ULTRALYTICS_DATASET"):
        bare.convert(source, "int8")
    converter = bare.registry.converter("ultralytics-openvino")
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(errors.InvalidReferenceError, match="calibration images"):
        converter.convert(source.path, source.manifest, ConvertOptions(precision="int8"), staging)

    assert list(staging.iterdir()) == []
    assert sorted(m.path for m in bare.store.find(CONVERTED_HUB, "ultralytics/yolov8n")) == before


def test_a_dataset_download_script_never_runs(
    service: Service, source: StoredModel, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    yaml = tmp_path / "data.yaml"
    yaml.write_text(
        f"path: {tmp_path}\ntrain: missing\nval: missing\nnames: [person]\n"
        f"download: open({str(marker)!r}, 'w').close()\n"
    )
    other = Service(service.store.root, ultralytics_dataset=yaml, ultralytics_imgsz=IMGSZ)
    converter = other.registry.converter("ultralytics-openvino")
    staging = tmp_path / "staging"
    staging.mkdir()

    # Straight to the converter: the store's int8 conversion would be found by its key.
    with pytest.raises(errors.InvalidReferenceError, match="not here"):
        converter.convert(source.path, source.manifest, ConvertOptions(precision="int8"), staging)
    assert not marker.exists()
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path: .\nnames: [person]\n", "naming its images"),  # neither val nor train
        ("path: .\nval: [images/val\n", "is not valid YAML"),
        ("path: [a, b]\nval: images\n", "naming its images"),
        ("- a list\n- not a mapping\n", "naming its images"),
    ],
    ids=["no-images", "unparsable", "path-not-a-folder", "not-a-mapping"],
)
def test_a_dataset_yaml_without_images_or_syntax_is_refused(
    service: Service, source: StoredModel, tmp_path: Path, text: str, message: str
) -> None:
    yaml = tmp_path / "data.yaml"
    yaml.write_text(text)
    other = Service(service.store.root, ultralytics_dataset=yaml, ultralytics_imgsz=IMGSZ)
    converter = other.registry.converter("ultralytics-openvino")
    staging = tmp_path / "staging"
    staging.mkdir()

    with pytest.raises(errors.InvalidReferenceError, match=message) as caught:
        converter.convert(source.path, source.manifest, ConvertOptions(precision="int8"), staging)
    assert str(yaml) in str(caught.value) and "MODEL_DOWNLOAD_DATASETS_DIR" in str(caught.value)
    assert list(staging.iterdir()) == []


def test_a_named_dataset_is_looked_up_in_the_datasets_folder(
    source: StoredModel, dataset: Path, tmp_path: Path
) -> None:
    named = Service(tmp_path / "store", datasets_dir=dataset.parent, ultralytics_imgsz=IMGSZ)
    converter = named.registry.converter("ultralytics-openvino")
    options = ConvertOptions(precision="int8", calibration_data=dataset.stem)

    converter.check_options(source.manifest, options)
    inputs = converter.cache_inputs(source.manifest, options)
    assert inputs["calibration_data"] == str(dataset)
    assert inputs["calibration_sha256"] == hashlib.sha256(dataset.read_bytes()).hexdigest()

    missing = ConvertOptions(precision="int8", calibration_data="coco8")
    with pytest.raises(errors.InvalidReferenceError, match="coco8.yaml or .*coco8.yml") as caught:
        converter.check_options(source.manifest, missing)
    assert str(dataset.parent) in str(caught.value) and "Nothing is downloaded" in str(caught.value)


def test_int4_is_refused(service: Service, source: StoredModel) -> None:
    with pytest.raises(errors.InvalidReferenceError, match="not int4"):
        service.convert(source, "int4")


def test_options_that_do_not_apply_are_refused(service: Service, source: StoredModel) -> None:
    converter = service.registry.converter("ultralytics-openvino")
    for options, named in (
        (ConvertOptions(precision="fp16", min_cosine=0.9), "min_cosine"),
        (ConvertOptions(precision="fp16", task="object-detection"), "task"),
    ):
        with pytest.raises(errors.InvalidReferenceError, match=named):
            converter.check_options(source.manifest, options)


def test_only_ultralytics_models_are_accepted(service: Service, source: StoredModel) -> None:
    converter = service.registry.converter("ultralytics-openvino")
    elsewhere = source.manifest.model_copy(update={"hub": "huggingface"})
    assert converter.accepts(source.manifest)
    assert not converter.accepts(elsewhere)
