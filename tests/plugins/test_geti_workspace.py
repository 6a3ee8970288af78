"""Geti: which workspace is read (GETI_WORKSPACE_ID), and partial exports that downloads left."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from model_download import errors
from tests.plugins.test_geti import GROUP, Site, _store, geti, ir, pull  # noqa: F401  (fixtures)


def test_several_workspaces_need_geti_workspace_id(
    geti: Site,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = geti.server
    other = server.add_workspace("Team B")
    with pytest.raises(errors.HubError, match=r"2 workspaces .*'Team B'.*set GETI_WORKSPACE_ID"):
        pull(f"geti:{GROUP}")

    monkeypatch.setenv("GETI_WORKSPACE_ID", server.workspace_id)
    stored = pull(f"geti:{GROUP}")
    assert _store().verify(stored) == []
    assert all(f"/workspaces/{server.workspace_id}/" in r.path for r in server.exports())

    monkeypatch.setenv("GETI_WORKSPACE_ID", other)  # a workspace without that project
    with pytest.raises(errors.ModelNotFoundError, match="no project 'card-detection'"):
        pull(f"geti:{GROUP}@fp16")
    monkeypatch.setenv("GETI_WORKSPACE_ID", "0" * 24)
    with pytest.raises(errors.ModelNotFoundError, match=f"no workspace {'0' * 24}: check GETI_"):
        pull(f"geti:{GROUP}@fp16")


def test_partial_exports_of_dead_downloads_are_swept(geti: Site) -> None:  # noqa: F811
    exports = _store().root / ".store" / "staging" / "geti" / ".exports"
    exports.mkdir(parents=True)
    revision = f"{geti.model.id}-{geti.fp32.id}"
    dead = exports / f".{revision}.zip.{uuid.uuid4().hex}.part"
    live = exports / f".{revision}.zip.{uuid.uuid4().hex}.part"  # another process's, writing now
    for part in (dead, live):
        part.write_bytes(b"the first bytes of an export")
    long_ago = time.time() - 24 * 3600
    os.utime(dead, (long_ago, long_ago))

    stored = pull(f"geti:{GROUP}")

    assert stored.manifest.revision == revision
    assert not dead.exists()
    assert live.exists()
