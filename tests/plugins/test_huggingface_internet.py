"""Against the real Hugging Face hub: skipped unless pytest runs with --internet."""

from __future__ import annotations

import pytest

from model_download import runtime
from model_download.pull import download_resolved, resolve_reference
from model_download.refs import parse_reference

pytestmark = pytest.mark.internet


def test_pull_a_small_public_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    runtime.reset()
    reference = parse_reference("hf:hf-internal-testing/tiny-random-bert", include=("*.json",))
    resolved = resolve_reference(reference, runtime.get_registry())
    stored = download_resolved(resolved, store=runtime.get_store(), registry=runtime.get_registry())
    assert (stored.path / "config.json").is_file()
    assert runtime.get_store().verify(stored) == []
