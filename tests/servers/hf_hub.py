"""A fake Hugging Face Hub on 127.0.0.1 that the real ``huggingface_hub`` client downloads from.

    with FakeHub(tmp_path / "hub") as hub:
        sha = hub.commit("org/model", {"config.json": b"{}", "model.safetensors": big_path})
        snapshot_download("org/model", endpoint=hub.url, cache_dir=tmp_path / "cache")

Routes, shaped after what huggingface_hub 1.21 reads (hf_api.py, file_download.py, utils/_http.py):

- ``GET /api/models/{repo}[/revision/{rev}]``: repo info (``sha``, ``siblings``, ``gated``...).
- ``GET /api/models/{repo}/tree/{rev}[/{path}]``: listing, paged by a ``Link: rel="next"`` header.
- ``GET /api/models/{repo}/refs``: branches and tags.
- ``GET /api/models?search=&author=&filter=&expand=``: a search, as the Hub answers it: only
  models with every ``filter`` tag, each with ``_id``, ``id`` and the ``expand`` fields, or
  without ``expand`` the Hub's default few (no ``sha``, no ``lastModified``).
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: metadata headers, bytes, single ``Range`` requests.
- ``HEAD|GET /cdn/{sha256}``: LFS bytes after a 302, when ``redirect_lfs`` is set.

The CDN listens on a second port: huggingface_hub only stops at a redirect (and reads the
``X-Linked-*`` headers off it) when it leads to another origin, as the real CDN does; on the same
origin it would follow the HEAD to a response without ``X-Repo-Commit`` and fail.

Errors carry ``X-Error-Code``/``X-Error-Message`` as ``hf_raise_for_status`` maps them. Faults
(``cut``, ``stall``, ``fail``) break transfers on purpose, and every request is logged.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import threading
from pathlib import Path

from tests.servers.hf_hub_http import Fault, HubState, LoggedRequest, Server
from tests.servers.hf_hub_repos import LFS_EXTENSIONS, BlobStore, Repo, RepoFile

__all__ = ["FakeHub", "LoggedRequest"]


class FakeHub:
    """Repos, tokens, faults and a request log, served over HTTP/1.1 on 127.0.0.1.

    ``url`` (and ``cdn_url``) are set by ``start()``, a new port each time unless ``port`` is given.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        page_size: int = 1000,
        lfs_threshold: int = 10_000,
        redirect_lfs: bool = False,
        port: int = 0,
    ) -> None:
        self.root = Path(root)
        self.page_size = page_size
        self.lfs_threshold = lfs_threshold
        self.redirect_lfs = redirect_lfs  # may be flipped while running
        self.url = self.cdn_url = ""
        self._port = port
        self._state = HubState(BlobStore(self.root / "blobs"))
        self._servers: list[Server] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        if self._servers:
            return self
        self._state.stopping.clear()
        self._servers = [
            Server(self, self._state, self._port, cdn=False),
            Server(self, self._state, 0, cdn=True),  # another origin, see the module docstring
        ]
        for server in self._servers:
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            ).start()
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)
        return self

    def stop(self) -> None:
        self._state.stopping.set()  # stalled transfers end now rather than after their delay
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []
        # Pooled keep-alive connections would otherwise park their handler threads forever.
        with self._state.lock:
            conns, self._state.conns = list(self._state.conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- content ---------------------------------------------------------------------------------

    def commit(
        self,
        repo_id: str,
        files: dict[str, bytes | Path],
        *,
        branch: str = "main",
        tag: str | None = None,
        delete: tuple[str, ...] | list[str] = (),
        private: bool | None = None,
        gated: bool | str | None = None,
        model_tags: list[str] | None = None,
        message: str = "",
    ) -> str:
        """Commit on ``branch`` (created from main if new) and return the commit sha.

        Files not named carry over from the parent. ``private``/``gated`` (True meaning "auto")
        set the repo's visibility, ``model_tags`` the labels searches filter on; None keeps
        them, so later commits need not repeat them.
        """
        if len(parts := repo_id.split("/")) > 2 or "" in parts:
            raise ValueError(f"repo ids are 'name' or 'org/name', not {repo_id!r}")
        # Hash before taking the lock: big files take seconds and requests should keep flowing.
        added = {}
        for path, content in files.items():
            blob = self._state.store.add(content)
            lfs = blob.size >= self.lfs_threshold or Path(path).suffix.lower() in LFS_EXTENSIONS
            added[path] = RepoFile(blob, lfs)
        with self._state.lock:
            repo = self._state.repos.setdefault(repo_id, Repo(repo_id))
            if private is not None:
                repo.private = private
            if gated is not None:
                repo.gated = "auto" if gated is True else gated
            if model_tags is not None:
                repo.model_tags = list(model_tags)
            commit = repo.add_commit(branch, added, tuple(delete), message)
            if tag is not None:
                repo.tags[tag] = commit.sha
        return commit.sha

    def add_token(self, token: str, grants: tuple[str, ...] | list[str] = ()) -> None:
        """Make ``token`` valid; it opens the private and gated repos in ``grants``."""
        with self._state.lock:
            self._state.tokens[token] = frozenset(grants)

    # -- faults ----------------------------------------------------------------------------------

    def cut(self, path: str, after_bytes: int, times: int | None = 1) -> None:
        """File GETs of ``path`` ("*": any) send full headers, ``after_bytes``, then hang up."""
        self._add_fault(Fault("cut", path, times, after_bytes=after_bytes))

    def stall(self, path: str, after_bytes: int, seconds: float, times: int | None = 1) -> None:
        """Like ``cut``, but stay silent for ``seconds`` with the socket open before hanging up."""
        self._add_fault(Fault("stall", path, times, after_bytes=after_bytes, seconds=seconds))

    def fail(self, path: str, status: int = 503, times: int | None = 1) -> None:
        """File GETs of ``path`` answer ``status`` with no body; "*" fails every request."""
        self._add_fault(Fault("fail", path, times, status=status))

    def clear_faults(self) -> None:
        with self._state.lock:
            self._state.faults.clear()

    def _add_fault(self, fault: Fault) -> None:
        with self._state.lock:
            self._state.faults.append(fault)

    # -- request log -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._state.lock:
            return list(self._state.log)

    def clear_log(self) -> None:
        with self._state.lock:
            self._state.log.clear()

    def file_requests(self, repo_id: str | None = None, method: str = "GET") -> list[LoggedRequest]:
        """Resolve and CDN requests that answered with file bytes (200/206, cut ones included)."""
        return [
            r
            for r in self.requests
            if r.file is not None
            and r.method == method
            and r.status in (200, 206)
            and repo_id in (None, r.repo_id)
        ]


def main(argv: list[str] | None = None) -> None:
    """Serve random files for a benchmark until SIGTERM or Ctrl-C; prints the URL first."""
    parser = argparse.ArgumentParser(prog="python -m tests.servers.hf_hub")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--repo", default="org/model")
    parser.add_argument(
        "--file", action="append", default=[], metavar="NAME=SIZE_MB", help="SIZE_MB * 10**6 bytes"
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redirect-lfs", action="store_true")
    args = parser.parse_args(argv)
    files = {}
    for spec in args.file:
        name, _, size_mb = spec.partition("=")
        path, size = args.root / "src" / name, int(float(size_mb) * 1_000_000)
        if not path.exists() or path.stat().st_size != size:  # reuse files from an earlier run
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as f:
                for offset in range(0, size, 1 << 20):
                    f.write(os.urandom(min(1 << 20, size - offset)))
        files[name] = path
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with FakeHub(args.root / "hub", port=args.port, redirect_lfs=args.redirect_lfs) as hub:
        hub.commit(args.repo, files)
        print(hub.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()


if __name__ == "__main__":
    main()
