"""The HTTP side of the fake Hugging Face Hub: routes, access rules, faults, the request log.

``FakeHub`` (hf_hub.py) owns a ``HubState`` and two ``Server``s over it: the Hub, and a "CDN" on
its own port that LFS downloads are redirected to when ``redirect_lfs`` is set.
"""

from __future__ import annotations

import json
import re
import socket
import socketserver
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit

from tests.servers.hf_hub_repos import EXPANDABLE, Blob, BlobStore, Commit, Repo

if TYPE_CHECKING:
    from tests.servers.hf_hub import FakeHub

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # as sent, still quoted, without the query
    query: dict[str, str]
    range: str | None
    has_auth: bool  # an Authorization header was sent, valid or not
    status: int
    repo_id: str | None = None
    file: str | None = None  # path inside the repo, for resolve and CDN requests
    sent: int = 0  # body bytes the server sent, or began to send when the client hung up


@dataclass
class Fault:
    kind: str  # "cut", "stall" or "fail"
    path: str  # a path inside the repo, or "*"
    times: int | None  # None: forever
    after_bytes: int = 0
    seconds: float = 0.0
    status: int = 503


@dataclass
class HubState:
    """What handler threads share. All but ``store`` and ``stopping`` are guarded by ``lock``."""

    store: BlobStore
    repos: dict[str, Repo] = field(default_factory=dict)
    tokens: dict[str, frozenset[str]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    log: list[LoggedRequest] = field(default_factory=list)
    conns: set[socket.socket] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)  # stalls end when set

    def take_fault(self, kinds: tuple[str, ...], path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.kind in kinds and fault.path in (path, "*"):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self.faults.remove(fault)
                    return fault
        return None


class HubError(Exception):
    def __init__(self, status: int, code: str | None = None, message: str | None = None, **headers):
        super().__init__(status, code, message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a client that never hangs up must not keep the process alive
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, hub: FakeHub, state: HubState, port: int, *, cdn: bool) -> None:
        self.hub, self.state, self.is_cdn = hub, state, cdn
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (DNS); we only ever speak to loopback.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients hanging up is routine here
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients pool connections to the real Hub too
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't delay the 2nd
    server: Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # the hub keeps its own log; a line per request would drown test output

    def setup(self) -> None:
        super().setup()
        with self.server.state.lock:
            self.server.state.conns.add(self.connection)

    def finish(self) -> None:
        with self.server.state.lock:
            self.server.state.conns.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        state, url = self.server.state, urlsplit(self.path)
        self._path, self._query = url.path, dict(parse_qsl(url.query))
        self._logged, self._repo_id, self._file = False, None, None
        try:
            if fault := state.take_fault(("fail",), "*"):
                raise HubError(fault.status)
            segments = [unquote(s) for s in url.path.strip("/").split("/")]
            if segments[0] == "cdn" and len(segments) == 2:
                self._cdn(segments[1])
            elif self.server.is_cdn:
                raise HubError(404)
            else:
                self._check_token()
                if segments == ["api", "models"]:
                    self._search(url.path)
                elif segments[:2] == ["api", "models"]:
                    self._api(segments[2:], url.path)
                else:
                    self._resolve(segments)
        except HubError as err:
            self._send_error(err)
        except OSError:
            self.close_connection = True  # the client went away mid-response
        except Exception as exc:
            if not self._logged:
                self._send_error(HubError(500, None, repr(exc)))
            raise

    do_HEAD = do_GET

    # -- routes ----------------------------------------------------------------------------------

    def _api(self, segments: list[str], raw_path: str) -> None:
        repo_id, action, rest = self._split_repo(segments, ("revision", "tree", "refs"))
        repo = self._repo(repo_id, files=False)
        if action == "refs":
            with self.server.state.lock:
                refs = repo.refs_json()
            return self._send_json(refs)
        if action == "revision":  # no path follows, so the revision may hold unquoted '/'
            revision = "/".join(rest) or "main"
            with self.server.state.lock:
                commit = repo.resolve(revision)
                if commit is None:
                    raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                info = repo.info_json(commit, blobs=self._flag("blobs"))
            return self._send_json(info)
        commit, path = self._split_revision(repo, rest)
        entries = repo.tree_json(commit, path, recursive=self._flag("recursive"))
        if entries is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {commit.sha}")
        # The real cursor is opaque; an offset does as long as the client echoes the link back.
        cursor = self._query.get("cursor", "0")
        if not cursor.isdigit():
            raise HubError(400, None, f"Invalid cursor: {cursor}")
        start, size = int(cursor), self.server.hub.page_size
        headers = {}
        if start + size < len(entries):
            query = urlencode({**self._query, "cursor": start + size})
            headers["Link"] = f'<{self.server.hub.url}{raw_path}?{query}>; rel="next"'
        self._send_json(entries[start : start + size], **headers)

    def _search(self, raw_path: str) -> None:
        """``GET /api/models?search=&author=&filter=&expand=``: visible repos with every tag in
        ``filter``, each with the fields ``expand`` names; paged like the tree."""
        state, multi = self.server.state, parse_qs(urlsplit(self.path).query)
        words = self._query.get("search", "").lower()
        author = self._query.get("author")
        wanted, expand = set(multi.get("filter", [])), multi.get("expand", [])
        if unknown := sorted(set(expand) - EXPANDABLE):
            raise HubError(400, None, f'"expand" has invalid values: {", ".join(unknown)}')
        with state.lock:
            grants = state.tokens.get(self._token, frozenset()) if self._token else frozenset()
            found = [
                repo.listed_json(expand)
                for repo_id, repo in sorted(state.repos.items())
                if (not repo.private or repo_id in grants)
                and words in repo_id.lower()
                and (author is None or repo_id.split("/")[0] == author)
                and wanted <= set(repo.model_tags)
                and repo.resolve("main") is not None
            ]
        cursor = self._query.get("cursor", "0")
        start, size = int(cursor) if cursor.isdigit() else 0, self.server.hub.page_size
        headers = {}
        if start + size < len(found):
            # Every value of a repeated parameter (expand, filter) goes on to the next page.
            query = urlencode({**multi, "cursor": [start + size]}, doseq=True)
            headers["Link"] = f'<{self.server.hub.url}{raw_path}?{query}>; rel="next"'
        self._send_json(found[start : start + size], **headers)

    def _resolve(self, segments: list[str]) -> None:
        repo_id, _, rest = self._split_repo(segments, ("resolve",))
        repo = self._repo(repo_id, files=True)
        commit, path = self._split_revision(repo, rest)
        self._file, file = path, commit.files.get(path)
        headers = {"X-Repo-Commit": commit.sha}  # on 404s too: clients cache the absence by it
        if file is None:
            raise HubError(
                404, "EntryNotFound", f"{path} does not exist on {commit.sha}", **headers
            )
        headers["ETag"] = f'"{file.etag}"'
        if file.lfs:
            headers |= {"X-Linked-Etag": f'"{file.blob.sha256}"', "X-Linked-Size": file.blob.size}
        if self.command == "GET" and (fault := self.server.state.take_fault(("fail",), path)):
            raise HubError(fault.status)
        if file.lfs and self.server.hub.redirect_lfs:
            # Signed CDN urls carry their own query; ours names the file for faults and the log.
            query = urlencode({"repo": repo_id, "path": path})
            location = f"{self.server.hub.cdn_url}/cdn/{file.blob.sha256}?{query}"
            return self._send_head(302, headers | {"Location": location}, 0)
        self._send_file(file.blob, path, headers)

    def _cdn(self, sha256: str) -> None:
        blob = self.server.state.store.get(sha256)
        if blob is None:
            raise HubError(404)
        path = self._query.get("path", sha256)
        self._repo_id, self._file = self._query.get("repo"), path
        if self.command == "GET" and (fault := self.server.state.take_fault(("fail",), path)):
            raise HubError(fault.status)
        # Content-addressed and unauthenticated, like a signed url: the client drops its token.
        self._send_file(blob, path, {"ETag": f'"{sha256}"'})

    # -- access ----------------------------------------------------------------------------------

    def _check_token(self) -> None:
        header = self.headers.get("Authorization")
        self._token = None
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or token not in self.server.state.tokens:
                # No error code: hf_raise_for_status must not turn this into RepoNotFound.
                raise HubError(401, None, "Invalid credentials in Authorization header")
            self._token = token

    def _repo(self, repo_id: str, *, files: bool) -> Repo:
        state = self.server.state
        self._repo_id = repo_id
        with state.lock:
            repo = state.repos.get(repo_id)
            grants = state.tokens.get(self._token, frozenset()) if self._token else frozenset()
        if repo is None or (repo.private and repo_id not in grants):
            # A private repo looks missing, and without a token the Hub answers 401 for both.
            raise HubError(404 if self._token else 401, "RepoNotFound", "Repository not found")
        if files and repo.gated and repo_id not in grants:
            if self._token is None:
                message = "You must have access to it and be authenticated to access it."
                raise HubError(
                    401, "GatedRepo", f"Access to model {repo_id} is restricted. {message}"
                )
            message = "you are not in the authorized list."
            raise HubError(
                403, "GatedRepo", f"Access to model {repo_id} is restricted and {message}"
            )
        return repo

    # -- parsing ---------------------------------------------------------------------------------

    def _split_repo(self, segments: list[str], actions: tuple[str, ...]) -> tuple[str, str, list]:
        """``[*repo_id, action, *rest]`` -> (repo_id, action, rest); ids have one or two parts."""
        with self.server.state.lock:
            known = set(self.server.state.repos)
        candidates = [n for n in (2, 1) if len(segments) > n and segments[n] in actions]
        n = next((n for n in candidates if "/".join(segments[:n]) in known), None)
        if n is None and candidates:
            n = candidates[0]  # an unknown repo: let the access check say so
        if n is not None:
            return "/".join(segments[:n]), segments[n], segments[n + 1 :]
        if "revision" in actions and len(segments) in (1, 2):
            return "/".join(segments), "revision", []  # `/api/models/{repo}`: the default branch
        raise HubError(404, None, "Not found")

    def _split_revision(self, repo: Repo, rest: list[str]) -> tuple[Commit, str]:
        # huggingface_hub quotes '/' in revisions; other clients may not, so try longer prefixes.
        with self.server.state.lock:
            for i in range(1, len(rest) + 1):
                if commit := repo.resolve("/".join(rest[:i])):
                    return commit, "/".join(rest[i:])
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rest[0] if rest else ''}")

    def _flag(self, name: str) -> bool:
        return self._query.get(name, "").lower() in ("1", "true")

    def _byte_range(self, size: int) -> tuple[int, int] | None:
        """(start, end exclusive) of a single ``Range``; None: send it all, as RFC 9110 allows."""
        match = _RANGE.fullmatch(self.headers.get("Range", "").replace(" ", ""))
        if match is None or match.groups() == ("", ""):
            return None
        first, last = match.groups()
        if first == "":  # suffix form: the last N bytes
            start, end = max(size - int(last), 0), size if int(last) else 0
        else:
            start, end = int(first), size if last == "" else min(int(last) + 1, size)
            if last != "" and int(last) < start:
                return None
        if start >= end:
            raise HubError(416, **{"Content-Range": f"bytes */{size}"})
        return start, end

    # -- responses -------------------------------------------------------------------------------

    def _send_head(self, status: int, headers: dict, length: int, body: int | None = None) -> None:
        """Log, then send the status and headers; ``body``: bytes to follow if not ``length``."""
        # Logged before anything goes out, so a client that has its answer finds it in the log.
        entry = LoggedRequest(
            method=self.command,
            path=self._path,
            query=self._query,
            range=self.headers.get("Range"),
            has_auth="Authorization" in self.headers,
            status=status,
            repo_id=self._repo_id,
            file=self._file,
            sent=0 if self.command == "HEAD" else length if body is None else body,
        )
        with self.server.state.lock:
            self.server.state.log.append(entry)
        self._logged = True
        self.send_response(status)
        for name, value in headers.items():
            # Header lines are latin-1; a non-ASCII file name must not kill the response.
            self.send_header(name, str(value).encode("ascii", "backslashreplace").decode())
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send_json(self, payload: object, **headers: str) -> None:
        body = json.dumps(payload).encode()
        self._send_head(200, {"Content-Type": "application/json", **headers}, len(body))
        if self.command == "GET":
            self.wfile.write(body)

    def _send_error(self, err: HubError) -> None:
        headers, body = dict(err.headers), b""
        if err.code:
            headers["X-Error-Code"] = err.code
        if err.message:
            headers |= {"X-Error-Message": err.message, "Content-Type": "application/json"}
            body = json.dumps({"error": err.message}).encode()
        self._send_head(err.status, headers, len(body))
        if self.command == "GET":
            self.wfile.write(body)

    def _send_file(self, blob: Blob, path: str, headers: dict) -> None:
        name = quote(path.rsplit("/", 1)[-1])
        headers |= {
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            # huggingface_hub reads the display name out of `filename="...";`.
            "Content-Disposition": f"inline; filename*=UTF-8''{name}; filename=\"{name}\";",
        }
        start, end, status = 0, blob.size, 200
        if span := self._byte_range(blob.size):
            (start, end), status = span, 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        if self.command == "HEAD":
            return self._send_head(status, headers, end - start)
        fault = self.server.state.take_fault(("cut", "stall"), path)
        count = end - start if fault is None else min(end - start, fault.after_bytes)
        self._send_head(status, headers, end - start, count)
        if count:
            with blob.path.open("rb") as f:
                # sendfile keeps bytes in the kernel: the benchmark compares against curl.
                self.connection.sendfile(f, start, count)
        if fault is not None:
            if fault.kind == "stall":
                self.server.state.stopping.wait(fault.seconds)
            # FIN, not RST: the client must see exactly `after_bytes`, then end of stream.
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
