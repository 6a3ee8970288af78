"""A loopback Intel Geti server speaking the part of its REST API (2.x) that downloads use.

    with FakeGeti(tmp_path / "geti") as geti:  # tls=True: HTTPS, with a CA of its own
        project = geti.add_project("Card Detection")
        group = geti.add_group(project, "ATSS")
        model = geti.add_model(group, {"weights.pth": b"..."})
        geti.add_optimized(model, "OpenVINO", "FP16", {"openvino.xml": xml, "openvino.bin": bin})

Routes, each under ``/api/v1`` and needing ``x-api-key: <token>`` (401 without), shaped after
Geti 2.x (the web UI's ``urls.ts``, the resource service's model endpoints and REST views):

- ``personal_access_tokens/organization``: ``{"organizationId"}`` of the token.
- ``organizations/{org}/workspaces``: ``{"workspaces": [{"id", "name", ...}]}``.
- ``.../workspaces/{ws}/projects?limit=&skip=``: ``{"projects", "project_counts", "next_page"}``.
- ``.../projects/{p}[/model_groups[/{g}]]``: a project; ``{"model_groups": [...]}``; one group,
  each group with its ``models`` (``id``, ``version``, ``purge_info``...).
- ``.../model_groups/{g}/models/{m}``: model details, with its ``optimized_models``.
- ``.../models/{m}/export``: the base model's files, zipped as Geti zips model adapters.
- ``.../models/{m}/optimized_models/{o}/export?model_only=``: the model files, or (false, the
  route's default) the exportable code: ``model/model.xml``, ``python/demo.py``...

Errors are Geti's JSON ``{"error_code", "message", "http_status"}``. HEAD answers 405 (FastAPI
routes GET only) and ``Range`` is ignored (Geti builds each export per request). Every request is
logged.
"""

from __future__ import annotations

import json
import re
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from tests.servers.geti_content import (
    TOKEN,
    Group,
    LoggedRequest,
    Model,
    Optimized,
    Project,
    exportable_code,
    group_json,
    model_json,
    new_id,
    optimized_json,
    project_json,
    zip_files,
)
from tests.servers.tls import make_certificates

__all__ = ["TOKEN", "FakeGeti", "LoggedRequest", "zip_files"]


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeGeti:
    """Projects, model groups, models and their exports, served on 127.0.0.1."""

    def __init__(self, root: Path, *, tls: bool = False, token: str = TOKEN) -> None:
        self.root = Path(root)
        self.token = token
        self.org_id, self.workspace_id = new_id(), new_id()
        #: Every workspace by id, the first (``workspace_id``) holding the projects.
        self.workspaces = {self.workspace_id: "Default Workspace"}
        self.projects: list[Project] = []
        self.log: list[LoggedRequest] = []
        self.url = ""
        self.ca_bundle: Path | None = None
        #: When set, export requests are answered by a redirect to the same path there.
        self.redirect_exports: str | None = None
        self._tls = tls
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- content ---------------------------------------------------------------------------------

    def add_workspace(self, name: str) -> str:
        """Another workspace of the organization, with no projects; its id."""
        workspace = new_id()
        self.workspaces[workspace] = name
        return workspace

    def add_project(self, name: str) -> Project:
        project = Project(new_id(), name)
        self.projects.append(project)
        return project

    def add_group(self, project: Project, name: str, template: str = "") -> Group:
        group = Group(new_id(), name, template or f"Custom_{name}", new_id())
        project.groups.append(group)
        return group

    def add_model(self, group: Group, files: dict[str, bytes]) -> Model:
        model = Model(new_id(), len(group.models) + 1, files)
        group.models.append(model)
        return model

    def add_optimized(
        self,
        model: Model,
        model_format: str,
        precision: str,
        files: dict[str, bytes],
        *,
        xai: bool = False,
    ) -> Optimized:
        code = {}
        if model_format == "OpenVINO":
            xml = next(v for k, v in files.items() if k.endswith(".xml"))
            weights = next(v for k, v in files.items() if k.endswith(".bin"))
            code = exportable_code(xml, weights)
        optimized = Optimized(new_id(), model_format, precision, files, code, xai)
        model.optimized.append(optimized)
        return optimized

    def exports(self) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.log if r.is_export]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeGeti:
        server = _Server(self)
        if self._tls:
            self.ca_bundle, cert, key = make_certificates(self.root)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self._server = server
        scheme = "https" if self._tls else "http"
        self.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeGeti:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- answers -------------------------------------------------------------------------------

    def answer(self, path: str, query: dict[str, str]) -> tuple[str, bytes, str | None]:
        """(content type, body, attachment name) for a GET, or a _Refusal."""
        for pattern, handler in _ROUTES:
            if match := re.fullmatch(pattern, path):
                return handler(self, query, **match.groupdict())
        raise _Refusal(404, "resource_not_found", f"no route {path}")

    def _workspace(self, org: str, ws: str | None = None) -> list[Project]:
        """The projects of workspace ``ws`` (none for the organization's route alone)."""
        if org != self.org_id or (ws is not None and ws not in self.workspaces):
            raise _Refusal(404, "workspace_not_found", "The requested workspace was not found.")
        return self.projects if ws == self.workspace_id else []

    def _project(self, org: str, ws: str, project: str) -> Project:
        for each in self._workspace(org, ws):
            if each.id == project:
                return each
        raise _Refusal(404, "project_not_found", f"Project with ID `{project}` not found.")

    def _group(self, org: str, ws: str, project: str, group: str) -> Group:
        for each in self._project(org, ws, project).groups:
            if each.id == group:
                return each
        raise _Refusal(404, "model_storage_not_found", f"Model group `{group}` not found.")

    def _model(self, org: str, ws: str, project: str, group: str, model: str) -> Model:
        for each in self._group(org, ws, project, group).models:
            if each.id == model:
                return each
        raise _Refusal(404, "model_not_found", f"Model with ID `{model}` not found.")


def _json(body: object) -> tuple[str, bytes, None]:
    return "application/json", json.dumps(body).encode(), None


def _organization(geti: FakeGeti, query: dict[str, str]) -> tuple[str, bytes, None]:
    return _json({"organizationId": geti.org_id})


def _workspaces(geti: FakeGeti, query: dict[str, str], org: str) -> tuple[str, bytes, None]:
    geti._workspace(org)
    listed = [
        {"id": ws, "name": name, "organizationId": org} for ws, name in geti.workspaces.items()
    ]
    return _json({"workspaces": listed})


def _projects(geti: FakeGeti, query: dict[str, str], org: str, ws: str) -> tuple[str, bytes, None]:
    projects = geti._workspace(org, ws)
    limit, skip = int(query.get("limit", 10)), int(query.get("skip", 0))
    page = projects[skip : skip + limit]
    more = skip + limit < len(projects)
    next_page = f"?limit={limit}&skip={skip + limit}" if more else ""
    return _json(
        {
            "projects": [project_json(p) for p in page],
            "project_counts": len(projects),
            "next_page": next_page,
        }
    )


def _project(geti: FakeGeti, query: dict[str, str], **ids: str) -> tuple[str, bytes, None]:
    return _json(project_json(geti._project(**ids)))


def _groups(geti: FakeGeti, query: dict[str, str], **ids: str) -> tuple[str, bytes, None]:
    return _json({"model_groups": [group_json(g) for g in geti._project(**ids).groups]})


def _group(geti: FakeGeti, query: dict[str, str], **ids: str) -> tuple[str, bytes, None]:
    return _json(group_json(geti._group(**ids)))


def _details(geti: FakeGeti, query: dict[str, str], **ids: str) -> tuple[str, bytes, None]:
    group = geti._group(**{k: v for k, v in ids.items() if k != "model"})
    model = geti._model(**ids)
    return _json(
        {
            **model_json(model, group),
            "architecture": group.name,
            "precision": ["FP32"],
            "optimized_models": [optimized_json(o, group) for o in model.optimized],
            "labels": [],
            "training_framework": {"type": "otx", "version": "2.4.0"},
        }
    )


def _export(geti: FakeGeti, query: dict[str, str], **ids: str) -> tuple[str, bytes, str]:
    model = geti._model(**ids)
    return "application/zip", model.export or zip_files(model.files), "PyTorch_model.zip"


def _optimized_export(
    geti: FakeGeti, query: dict[str, str], optimized: str, **ids: str
) -> tuple[str, bytes, str]:
    found = next((o for o in geti._model(**ids).optimized if o.id == optimized), None)
    if found is None:
        raise _Refusal(404, "model_not_found", f"Model with ID `{optimized}` not found.")
    title = found.model_format
    if found.export is not None:
        return "application/zip", found.export, f"{title}_model.zip"
    # As in Geti, model_only defaults to false here: the exportable code, for OpenVINO models.
    if query.get("model_only", "false") == "false" and found.code:
        return (
            "application/zip",
            zip_files(found.code, compress=True),
            f"{title}_exportable_code.zip",
        )
    return "application/zip", zip_files(found.files), f"{title}_model.zip"


_WS = r"/api/v1/organizations/(?P<org>[^/]+)/workspaces/(?P<ws>[^/]+)"
_PROJECT = _WS + r"/projects/(?P<project>[^/]+)"
_GROUP = _PROJECT + r"/model_groups/(?P<group>[^/]+)"
_MODEL = _GROUP + r"/models/(?P<model>[^/]+)"
_ROUTES = [
    (r"/api/v1/personal_access_tokens/organization", _organization),
    (r"/api/v1/organizations/(?P<org>[^/]+)/workspaces", _workspaces),
    (_WS + r"/projects", _projects),
    (_PROJECT, _project),
    (_PROJECT + r"/model_groups", _groups),
    (_GROUP, _group),
    (_MODEL, _details),
    (_MODEL + r"/export", _export),
    (_MODEL + r"/optimized_models/(?P<optimized>[^/]+)/export", _optimized_export),
]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, geti: FakeGeti) -> None:
        self.geti = geti
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (DNS); we only ever speak to loopback.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up, or refusing our certificate, is routine here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # FakeGeti keeps its own log

    def do_HEAD(self) -> None:
        self._send(405, "application/json", b'{"detail":"Method Not Allowed"}', head=True)

    def do_GET(self) -> None:
        geti, url = self.server.geti, urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        headers: dict[str, str] = {}
        try:
            if geti.redirect_exports and url.path.endswith("/export"):
                headers["Location"] = geti.redirect_exports + self.path
                raise _Refusal(302, "found", "Found")
            if self.headers.get("x-api-key") != geti.token:
                raise _Refusal(401, "unauthorized", "Unauthorized")
            content_type, body, filename = geti.answer(url.path, query)
            status = 200
        except _Refusal as refusal:
            content_type, filename, status = "application/json", None, refusal.status
            body = json.dumps(
                {"error_code": refusal.code, "message": refusal.message, "http_status": status}
            ).encode()
        with geti._lock:
            geti.log.append(
                LoggedRequest("GET", url.path, query, status, "x-api-key" in self.headers)
            )
        self._send(status, content_type, body, filename=filename, headers=headers)

    def _send(
        self,
        status: int,
        content_type: str,
        body: bytes,
        *,
        filename: str | None = None,
        head: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if filename:
            self.send_header("Content-Disposition", f"attachment; filename={filename}")
        self.end_headers()
        if not head:
            self.wfile.write(body)
