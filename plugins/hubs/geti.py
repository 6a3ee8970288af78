"""Intel Geti: a project's trained model, base or optimized, as Geti's REST API exports it.

``geti:<project>/<model group>@<revision>``, e.g. ``geti:card-detection/ATSS@optimized-FP16``;
the revision syntax is in :mod:`plugins.hubs.geti_select`. Settings: ``GETI_HOST``,
``GETI_TOKEN`` (a personal access token, sent as ``x-api-key``), ``GETI_WORKSPACE_ID`` (default:
the organization's only workspace), ``GETI_VERIFY_TLS`` and ``GETI_CA_BUNDLE``. It speaks plain
REST, not geti-sdk, which pins ``openvino~=2025.2`` and ``pydantic==2.12.4`` and so cannot share
this project's environment (see :mod:`plugins.hubs.geti_client`).

Geti builds a model's export (a zip) per request and publishes neither its size nor a hash, and
the store lists and verifies files by exactly those. So ``resolve`` fetches the export once
(verified by its length and the zip's checksums), checks every member
(:mod:`model_download.archives`: a hostile archive is refused whole, before anything reaches the
store) and lists the members, with their sizes and sha256, as the model's files; ``fetch_file``
then unpacks one member into the staging folder. The manifest names the unpacked files, they are
deduplicated like any other, and nobody sees half a model: the store publishes the staging
folder by one rename. The export waits in a folder beside the store's staging ones until the
model is stored (``on_stored`` removes it); a repeat finds the model stored and asks Geti for
its metadata only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from model_download import archives, errors
from model_download.refs import ModelReference
from model_download.resolved import RemoteFile, ResolvedModel, looks_like_openvino_ir, select_files
from model_download.settings import Settings
from model_download.store.store import ModelStore, StoredModel
from model_download.transfer import fetch_file
from plugins.base import HubPlugin
from plugins.hubs.geti_client import GetiClient, GetiConnection, GetiPool
from plugins.hubs.geti_select import (
    Item,
    Selection,
    names,
    newest_first,
    parse_revision,
    pick,
    pick_model,
    pick_optimized,
)

logger = logging.getLogger(__name__)

# Beside the store's staging folders, on its disk. No model id starts with '.', so no model's
# staging folder can be this one.
_EXPORTS = Path(".store") / "staging" / "geti" / ".exports"
# A model export is a few files of at most a few GB; anything far past that is not one.
LIMITS = archives.ArchiveLimits(max_members=5_000, max_total_size=32 << 30)
# The longest pause model_download.transfer makes between two attempts of a transfer.
_MAX_BACKOFF = 8.0


@dataclass(frozen=True)
class _Target:
    """One export: the revision it is stored under and the route that serves it."""

    revision: str
    route: str
    params: dict[str, str] | None
    what: str


class GetiHub(HubPlugin):
    """Models trained in Intel Geti, by project, model group and model (REST API 2.x)."""

    name = "geti"
    description = "Intel Geti projects' trained models (GETI_HOST, GETI_TOKEN)"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._lock = threading.Lock()
        self._pools: dict[tuple[bool, str | None, float], GetiPool] = {}
        self._workspaces: dict[tuple[str, str, str | None], str] = {}
        self._targets: dict[tuple[str, str], _Target] = {}
        self._downloads: dict[str, threading.Lock] = {}

    def validate(self, reference: ModelReference) -> ModelReference:
        if len(reference.id.split("/")) != 2:
            raise errors.InvalidReferenceError(
                f"{reference.id!r} is not a Geti model: write 'project/model group' (each a "
                "name or an id), e.g. 'geti:card-detection/ATSS@optimized-fp16'."
            )
        # Spelled out, so that '@fp16' and '@latest-optimized-openvino-fp16' share one name.
        return reference.with_revision(parse_revision(reference.revision).canonical())

    def resolve(self, reference: ModelReference) -> ResolvedModel:
        selection = parse_revision(reference.revision)
        client = self._client()
        target = self._locate(client, reference, selection)
        every = self._stored_files(reference, target.revision)
        if every is None:
            every = self._inspect(client, reference, target)
        chosen = select_files(every, reference.include, reference.exclude)
        if not chosen:
            # Nothing will be fetched from the export: it must not wait for a model never stored.
            _discard(self._archive_path(target))
            raise errors.RemoteFileNotFoundError(
                f"no file of {reference} matches include={list(reference.include)} "
                f"exclude={list(reference.exclude)}; its export has "
                f"{', '.join(f.path for f in every)}: loosen the patterns."
            )
        is_ir = looks_like_openvino_ir([f.path for f in every])
        return ResolvedModel(
            reference=reference,
            revision=target.revision,
            files=chosen,
            format="openvino-ir" if is_ir else None,
        )

    def fetch_file(
        self,
        resolved: ResolvedModel,
        file: RemoteFile,
        dest: Path,
        on_bytes: Callable[[int], None],
    ) -> str:
        client = self._client()
        target = self._target(client, resolved)
        archive = self._download(client, target)
        try:
            digest = archives.extract_member(
                archive,
                file.path,
                dest,
                limits=LIMITS,
                on_bytes=on_bytes,
                fsync=self.settings.fsync,
            )
        except errors.IntegrityError as exc:
            _discard(archive)
            raise type(exc)(f"the export of {resolved.reference}: {exc}") from exc
        if (file.sha256 and digest != file.sha256) or dest.stat().st_size != file.size:
            dest.unlink(missing_ok=True)
            _discard(archive)
            raise errors.IntegrityError(
                f"{file.path} of {resolved.reference} is not what was resolved (sha256 {digest}, "
                f"expected {file.sha256}): Geti's export changed; pull again."
            )
        return digest

    def on_stored(self, stored: StoredModel, store: ModelStore) -> None:
        _discard(store.root / _EXPORTS / f"{stored.manifest.revision}.zip")

    # -- finding the export --------------------------------------------------------------------

    def _client(self) -> GetiClient:
        connection = GetiConnection.from_settings(self.settings)
        bundle = connection.ca_bundle
        # The bundle's mtime is in the key: a renewed CA file applies without a restart.
        key = (connection.verify_tls, bundle, os.path.getmtime(bundle) if bundle else 0.0)
        with self._lock:
            if key not in self._pools:
                self._pools[key] = GetiPool(connection.verify_tls, bundle)
            return GetiClient(connection, self._pools[key])

    def _workspace(self, client: GetiClient) -> str:
        """The workspace's route, ``/organizations/{org}/workspaces/{ws}``."""
        connection = client.connection
        token = hashlib.sha256(connection.token.encode()).hexdigest()
        key = (connection.host, token, connection.workspace_id)
        with self._lock:
            if key in self._workspaces:
                return self._workspaces[key]
        answer = client.get_json("/personal_access_tokens/organization", "the token's organization")
        org = answer.get("organizationId")
        if not org:
            raise errors.HubError(f"{client.host} named no organization for GETI_TOKEN.")
        workspace = connection.workspace_id or self._only_workspace(client, str(org))
        route = f"/organizations/{org}/workspaces/{workspace}"
        with self._lock:
            self._workspaces[key] = route
        return route

    def _only_workspace(self, client: GetiClient, org: str) -> str:
        listed = client.get_json(f"/organizations/{org}/workspaces", "the workspaces")
        workspaces: list[Item] = listed.get("workspaces") or []
        if len(workspaces) != 1:
            raise errors.HubError(
                f"the organization on {client.host} has {len(workspaces)} workspaces "
                f"({names(workspaces)}): set GETI_WORKSPACE_ID to the id of the one to use."
            )
        return str(workspaces[0]["id"])

    def _project(self, client: GetiClient, workspace: str, key: str) -> Item:
        missing = errors.ModelNotFoundError(
            f"{client.host} has no workspace {workspace.rsplit('/', 1)[-1]}: check "
            "GETI_WORKSPACE_ID, or leave it unset to use the organization's only workspace."
        )
        projects: list[Item] = []
        while True:
            page = client.get_json(
                f"{workspace}/projects",
                "the workspace's projects",
                params={"limit": 100, "skip": len(projects)},
                missing=missing,
            )
            batch = page.get("projects") or []
            projects.extend(batch)
            if not batch or len(projects) >= int(page.get("project_counts") or 0):
                break
        found = pick(projects, key, "project", f"the workspace on {client.host}")
        if found is None:
            raise errors.ModelNotFoundError(
                f"{client.host} has no project {key!r} that GETI_TOKEN's account can see: check "
                f"the name, or use the project's id. Its projects: {names(projects)}."
            )
        return found

    def _locate(
        self, client: GetiClient, reference: ModelReference, selection: Selection
    ) -> _Target:
        """Find the export ``selection`` names; remember it for ``fetch_file``."""
        workspace = self._workspace(client)
        project_key, group_key = reference.id.split("/")
        project = self._project(client, workspace, project_key)
        where = f"project {project.get('name')!r}"
        route = f"{workspace}/projects/{project['id']}"
        groups: list[Item] = (
            client.get_json(f"{route}/model_groups", f"the model groups of {where}").get(
                "model_groups"
            )
            or []
        )
        group = pick(groups, group_key, "model group", where)
        if group is None:
            raise errors.ModelNotFoundError(
                f"{where} on {client.host} has no model group {group_key!r} (an architecture, "
                f"such as 'ATSS'): its groups are {names(groups)}."
            )
        where = f"model group {group.get('name')!r} of {where}"
        route = f"{route}/model_groups/{group['id']}/models"
        if selection.model == "latest" and selection.optimized_id:
            model = self._owner(client, route, group, selection.optimized_id, where)
        else:
            model = pick_model(group, selection, where)
        route = f"{route}/{model['id']}"
        target = self._export(client, reference, selection, route, where)
        with self._lock:
            self._targets[(reference.id, target.revision)] = target
        return target

    def _owner(
        self, client: GetiClient, route: str, group: Item, optimized_id: str, where: str
    ) -> Item:
        """The model of ``group`` that the optimized model belongs to, looked for newest first."""
        for model in newest_first(group, where):
            details = client.get_json(f"{route}/{model['id']}", f"model {model['id']} of {where}")
            if any(o.get("id") == optimized_id for o in details.get("optimized_models") or []):
                return model
        raise errors.RevisionNotFoundError(
            f"no model of {where} has an optimized model {optimized_id}: check the id in Geti "
            "(the model's page lists its optimized models)."
        )

    def _export(
        self,
        client: GetiClient,
        reference: ModelReference,
        selection: Selection,
        route: str,
        where: str,
    ) -> _Target:
        model_id = route.rsplit("/", 1)[-1]
        if selection.export == "base":
            what = f"the base export of model {model_id} of {reference}"
            return _Target(f"{model_id}-base", f"{route}/export", None, what)
        details = client.get_json(route, f"model {model_id} of {where}")
        optimized = pick_optimized(details, selection, f"model {model_id} of {where}")
        revision = f"{model_id}-{optimized['id']}" + ("-code" if selection.code else "")
        # Geti's own default for this route is the exportable code: always say which.
        params = {"model_only": "false" if selection.code else "true"}
        what = f"the export of optimized model {optimized['id']} of {reference}"
        return _Target(revision, f"{route}/optimized_models/{optimized['id']}/export", params, what)

    def _target(self, client: GetiClient, resolved: ResolvedModel) -> _Target:
        reference = resolved.reference
        with self._lock:
            target = self._targets.get((reference.id, resolved.revision))
        # Resolved in another process: a resolved revision is itself a revision that pins it.
        return target or self._locate(client, reference, parse_revision(resolved.revision))

    # -- the export's bytes --------------------------------------------------------------------

    def _stored_files(self, reference: ModelReference, revision: str) -> list[RemoteFile] | None:
        """The files of this export as the store holds them, when it holds all of them."""
        stored = ModelStore(Path(self.settings.models_dir)).get(self.name, reference.id, revision)
        if stored is None:
            return None
        # Only a pull without patterns took every member; after partial pulls, ask the export.
        if not any(not s.include and not s.exclude for s in stored.manifest.selections):
            return None
        return [
            RemoteFile(path=f.path, size=f.size, sha256=f.sha256) for f in stored.manifest.files
        ]

    def _inspect(
        self, client: GetiClient, reference: ModelReference, target: _Target
    ) -> list[RemoteFile]:
        """Download the export and list its members, or refuse it whole."""
        archive = self._download(client, target)
        try:
            members = archives.scan(archive, LIMITS)
        except errors.IntegrityError as exc:
            _discard(archive)
            raise type(exc)(f"the export of {reference}: {exc}") from exc
        return [RemoteFile(path=m.path, size=m.size, sha256=m.sha256) for m in members]

    def _archive_path(self, target: _Target) -> Path:
        return Path(self.settings.models_dir) / _EXPORTS / f"{target.revision}.zip"

    def _download(self, client: GetiClient, target: _Target) -> Path:
        """The export's zip, fetched unless an earlier resolve left it; one fetch at a time."""
        path = self._archive_path(target)
        with self._lock:
            lock = self._downloads.setdefault(target.revision, threading.Lock())
        with lock:
            if path.is_file():
                return path
            self._sweep_parts(path.parent)
            # A name of our own: another process may be fetching the same export.
            part = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
            logger.info("downloading %s from %s", target.what, client.host)
            try:
                fetch_file(
                    client.pool,
                    client.url(target.route, target.params),
                    part,
                    size=None,
                    headers=client.headers(),
                    check_response=partial(client.check_download, target.what),
                    stall_timeout=self.settings.stall_timeout,
                    retries=self.settings.retries,
                    fsync=False,
                    label=target.what,
                )
                os.replace(part, path)
            finally:
                part.unlink(missing_ok=True)
        return path

    def _sweep_parts(self, folder: Path) -> None:
        """Remove the partial exports of downloads that died (a killed process leaves its own).

        Geti builds each export anew and ignores ``Range``, so a part is never resumed. A live
        transfer writes, or restarts its file, at least once per attempt, and gives up after
        ``retries + 1`` attempts of at most two stall timeouts and a back-off each: a part
        untouched for longer than that belongs to no live download, here or on another host.
        """
        stale_after = (2 * self.settings.stall_timeout + _MAX_BACKOFF) * (self.settings.retries + 1)
        now = time.time()
        for part in folder.glob(".*.part"):
            try:
                if now - part.stat().st_mtime > stale_after:
                    part.unlink()
                    logger.info("removed %s, left by a download that died", part.name)
            except FileNotFoundError:
                continue  # its download finished or another sweep removed it meanwhile


def _discard(archive: Path) -> None:
    # The folder stays, even empty: removing it could pull it from under another download.
    archive.unlink(missing_ok=True)
