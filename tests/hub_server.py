"""A small in-memory Hugging Face Hub server for end-to-end tests (test helper, not shipped in the package).

It speaks the subset of the Hub's HTTP protocol that `huggingface_hub` (with `HF_HUB_DISABLE_XET=1`) and
`transformers` use to push and pull model repos, so `push_to_hub` / `from_pretrained` can be tested over real
HTTP on 127.0.0.1 without network access:

    GET  /api/whoami-v2                                   whoami
    GET  /api/agent-harnesses                             agent registry huggingface_hub fetches (served empty)
    POST /api/repos/create                                create_repo
    POST /api/validate-yaml                               README.md metadata check (create_commit)
    GET  /api/models/{repo}[/revision/{rev}]              model_info / repo_info (`?blobs=1` adds sizes and LFS info)
    GET  /api/models/{repo}/refs                          list_repo_refs
    POST /api/models/{repo}/branch/{branch}               create_branch
    POST /api/models/{repo}/preupload/{rev}               upload mode per file (regular or lfs)
    POST /{repo}.git/info/lfs/objects/batch               LFS batch API (basic transfer): hands out upload URLs
    PUT  /__lfs_upload/{ticket}                           the pre-signed upload URL of one LFS object (no auth header)
    POST /{repo}.git/info/lfs/objects/verify              LFS verify action
    POST /api/models/{repo}/commit/{rev}                  NDJSON commit: header, file (base64), lfsFile, deletedFile/Folder
    GET  /api/models/{repo}/tree/{rev}[/{path}]           list_repo_tree / list_repo_files
    POST /api/models/{repo}/paths-info/{rev}              get_paths_info
    GET|HEAD /{repo}/resolve/{rev}/{path}                 file download (ETag, X-Repo-Commit, Content-Length,
                                                          X-Linked-Etag / X-Linked-Size for LFS files, Range)

Auth is bearer tokens (`tokens={token: user}`): a request carrying an unknown token gets 401 with the Hub's
"Invalid credentials in Authorization header" error, writes need a token whose user owns the namespace, and
private repos are only visible to their owner. Errors carry the Hub's `X-Error-Code` (RepoNotFound,
RevisionNotFound, EntryNotFound) so `huggingface_hub` raises its usual exception types. The server records what
it saw (`HubState.requests`, `.lfs_uploads`, per-commit inline vs LFS paths) for assertions; it never records
header values, so tokens never reach its logs.

Usage::

    with HubServer(tokens={"hf_test": "tester"}) as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_test", "HF_HUB_DISABLE_XET": "1", ...}
"""

from __future__ import annotations

import base64
import datetime as _dt
import fnmatch
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub refuses regular (non-LFS) files above 10 MiB
_COMMIT_OID = re.compile(r"^[0-9a-f]{40}$")
_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# The Hub's default `.gitattributes` (abridged): what it stores through LFS.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z",
        "*.arrow",
        "*.bin",
        "*.bz2",
        "*.ckpt",
        "*.ftz",
        "*.gz",
        "*.h5",
        "*.joblib",
        "*.lfs.*",
        "*.mlmodel",
        "*.model",
        "*.msgpack",
        "*.npy",
        "*.npz",
        "*.onnx",
        "*.ot",
        "*.parquet",
        "*.pb",
        "*.pickle",
        "*.pkl",
        "*.pt",
        "*.pth",
        "*.rar",
        "*.safetensors",
        "saved_model/**/*",
        "*.tar.*",
        "*.tar",
        "*.tflite",
        "*.tgz",
        "*.wasm",
        "*.xz",
        "*.zip",
        "*.zst",
        "*tfevents*",
    )
)


class HubError(Exception):
    """An HTTP error answered as the Hub does: status, JSON `{"error": message}`, X-Error-Code / X-Error-Message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})
        self.extra = extra  # more fields of the JSON body


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob (sha1 of `blob <size>\\0<data>`), what the Hub reports as a file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Blob:
    """One file at one commit: regular content inline, or a pointer to an LFS object."""

    size: int
    git_oid: str
    data: bytes | None = None
    lfs_sha256: str | None = None

    @property
    def etag(self) -> str:
        return self.lfs_sha256 or self.git_oid


@dataclass
class Commit:
    oid: str
    title: str
    description: str
    date: str
    parent: str | None
    files: dict[str, Blob]
    inline_paths: list[str] = field(default_factory=list)  # committed as base64 `file` entries
    lfs_paths: list[str] = field(default_factory=list)  # committed as `lfsFile` entries (content uploaded via LFS)


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: str
    refs: dict[str, str] = field(default_factory=dict)  # branch or refs/pr/N → commit oid
    commits: dict[str, Commit] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]


@dataclass
class HubState:
    """Everything the server holds, in memory; inspect it from tests (take `lock` while other requests may run)."""

    tokens: dict[str, str]
    orgs: dict[str, list[str]] = field(default_factory=dict)  # user → organisations it may write to
    repos: dict[str, Repo] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 → content
    lfs_tickets: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # ticket → (repo, sha256, size)
    lfs_uploads: list[dict[str, Any]] = field(default_factory=list)  # one per PUT to an upload URL
    lfs_verified: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path without query, status)
    unhandled: list[str] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    # ---- helpers for tests --------------------------------------------------------------------

    def head(self, repo_id: str, revision: str = "main") -> Commit:
        repo = self.repos[repo_id]
        return repo.commits[repo.refs[revision]]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Path → content of every file at `revision`."""
        with self.lock:
            return {path: self._content(blob) for path, blob in self.head(repo_id, revision).files.items()}

    def _content(self, blob: Blob) -> bytes:
        return blob.data if blob.lfs_sha256 is None else self.lfs_objects[blob.lfs_sha256]


class HubServer:
    """Runs the Hub protocol on 127.0.0.1 (ephemeral port) in a daemon thread; a context manager."""

    def __init__(self, tokens: dict[str, str], orgs: dict[str, list[str]] | None = None) -> None:
        self.state = HubState(tokens=dict(tokens), orgs=dict(orgs or {}))
        handler = type("BoundHubHandler", (_HubHandler,), {"state": self.state})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        handler.endpoint = self.endpoint
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TestHub/1.0"
    state: HubState
    endpoint: str

    # ---- plumbing -----------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep stderr quiet; see state.requests
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.raw_path = split.path
        body = self._read_body()
        status = 500
        try:
            self.user = self._authenticate()
            status, payload, headers = self._route(method, split.path, body)
        except HubError as error:
            status = error.status
            headers = {**error.headers, "X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            payload = {"error": error.message, **error.extra}
        except Exception as error:  # noqa: BLE001 - report server bugs as 500 with the message
            status, headers, payload = 500, {}, {"error": f"test hub server error: {type(error).__name__}: {error}"}
        with self.state.lock:
            self.state.requests.append((method, split.path, status))
        self._respond(method, status, payload, headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _respond(self, method: str, status: int, payload: Any, headers: dict[str, str]) -> None:
        if isinstance(payload, bytes):
            data, content_type = payload, "application/octet-stream"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json; charset=utf-8"
        self.send_response(status)
        headers = {"Content-Type": content_type, **headers}
        headers.setdefault("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _authenticate(self) -> str | None:
        header = self.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        user = self.state.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, INVALID_CREDENTIALS)
        return user

    def _require_user(self) -> str:
        if self.user is None:
            raise HubError(401, "You must be authenticated to access this resource (no token was sent).")
        return self.user

    def _can_write(self, namespace: str) -> bool:
        return self.user is not None and (namespace == self.user or namespace in self.state.orgs.get(self.user, []))

    def _repo(self, repo_id: str, write: bool = False) -> Repo:
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and not self._can_write(repo.owner)):
            # The Hub answers 401 for private repos of others and 404 otherwise; both say RepoNotFound.
            raise HubError(401 if self.user is None else 404, "Repository not found", "RepoNotFound")
        if write:
            self._require_user()
            if not self._can_write(repo.owner):
                raise HubError(403, f"You don't have write access to {repo_id}.")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        revision = unquote(revision)
        if revision.startswith("refs/heads/"):
            revision = revision[len("refs/heads/") :]
        oid = repo.refs.get(revision)
        if oid is None and _COMMIT_OID.match(revision) and revision in repo.commits:
            oid = revision
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def _json(self, body: bytes) -> dict[str, Any]:
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error.msg}") from None

    # ---- routing ------------------------------------------------------------------------------

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        # Split before unquoting: a quoted revision ("refs%2Fpr%2F1") is one segment.
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        with self.state.lock:
            if parts == ["api", "whoami-v2"] and method == "GET":
                return 200, self._whoami(), {}
            if parts == ["api", "agent-harnesses"] and method == "GET":  # huggingface_hub's agent detection
                return 200, {"standardEnvVars": [], "harnesses": {}}, {}
            if parts == ["api", "repos", "create"] and method == "POST":
                return self._create_repo(self._json(body))
            if parts == ["api", "validate-yaml"] and method == "POST":
                return self._validate_yaml(self._json(body))
            if len(parts) >= 4 and parts[:2] == ["api", "models"]:
                return self._api_model(method, "/".join(parts[2:4]), parts[4:], body)
            if len(parts) >= 2 and parts[:2] in (["api", "datasets"], ["api", "spaces"]):
                raise HubError(404, "This test hub only serves model repos", "RepoNotFound")
            if len(parts) == 2 and parts[0] == "__lfs_upload" and method == "PUT":
                return self._lfs_put(parts[1], body)
            if len(parts) == 6 and parts[1].endswith(".git") and parts[2:5] == ["info", "lfs", "objects"] and method == "POST":
                repo_id = f"{parts[0]}/{parts[1][: -len('.git')]}"
                if parts[5] == "batch":
                    return self._lfs_batch(repo_id, self._json(body))
                if parts[5] == "verify":
                    return self._lfs_verify(repo_id, self._json(body))
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            self.state.unhandled.append(f"{method} {path}")
        raise HubError(404, f"Not implemented by the test hub server: {method} {path}")

    def _api_model(self, method: str, repo_id: str, rest: list[str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        if not rest and method == "GET":
            return 200, self._model_info(self._repo(repo_id), "main"), {}
        if len(rest) == 2 and rest[0] == "revision" and method == "GET":
            return 200, self._model_info(self._repo(repo_id), rest[1]), {}
        if rest == ["refs"] and method == "GET":
            return 200, self._refs(self._repo(repo_id)), {}
        if len(rest) == 2 and rest[0] == "branch" and method == "POST":
            return self._create_branch(self._repo(repo_id, write=True), rest[1], self._json(body))
        if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
            return self._preupload(self._repo(repo_id, write=True), rest[1], self._json(body))
        if len(rest) == 2 and rest[0] == "commit" and method == "POST":
            return self._create_commit(self._repo(repo_id, write=True), rest[1], body)
        if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
            return self._tree(self._repo(repo_id), rest[1], "/".join(rest[2:]))
        if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
            return self._paths_info(self._repo(repo_id), rest[1], body)
        self.state.unhandled.append(f"{method} /api/models/{repo_id}/{'/'.join(rest)}")
        raise HubError(404, f"Not implemented by the test hub server: {method} /api/models/{repo_id}/{'/'.join(rest)}")

    # ---- account and repos --------------------------------------------------------------------

    def _whoami(self) -> dict[str, Any]:
        user = self._require_user()
        return {
            "type": "user",
            "id": hashlib.sha1(user.encode()).hexdigest()[:24],
            "name": user,
            "fullname": user.title(),
            "isPro": False,
            "canPay": False,
            "emailVerified": True,
            "orgs": [{"type": "org", "name": org, "roleInOrg": "write"} for org in self.state.orgs.get(user, [])],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test-hub", "role": "write", "createdAt": _now()}},
        }

    def _create_repo(self, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        user = self._require_user()
        repo_type = payload.get("type") or "model"
        if repo_type != "model":
            raise HubError(400, f"This test hub only hosts model repos, not {repo_type!r}.")
        namespace = payload.get("organization") or user
        name = payload.get("name") or ""
        if not _REPO_NAME.match(name) or name.endswith((".git", ".")) or "--" in name:
            raise HubError(400, f"Invalid repo name {name!r}.")
        if not self._can_write(namespace):
            raise HubError(403, f"You don't have the rights to create a model under the namespace {namespace!r}.")
        repo_id = f"{namespace}/{name}"
        url = f"{self.endpoint}/{repo_id}"
        if repo_id in self.state.repos:
            raise HubError(409, "You already created this model repo", url=url)
        repo = Repo(repo_id=repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")), created_at=_now())
        attributes = DEFAULT_GITATTRIBUTES.encode()
        initial = Commit(
            oid=secrets.token_hex(20),
            title="initial commit",
            description="",
            date=_now(),
            parent=None,
            files={".gitattributes": Blob(size=len(attributes), git_oid=git_blob_oid(attributes), data=attributes)},
            inline_paths=[".gitattributes"],
        )
        repo.commits[initial.oid] = initial
        repo.refs["main"] = initial.oid
        self.state.repos[repo_id] = repo
        return 200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}, {}

    def _model_info(self, repo: Repo, revision: str) -> dict[str, Any]:
        commit = self._commit(repo, revision)
        blobs = self.query.get("blobs", "").lower() in ("1", "true")
        card = _card_metadata(commit.files.get("README.md"), self.state)
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=blob.size, blobId=blob.git_oid)
                if blob.lfs_sha256:
                    sibling["lfs"] = {
                        "size": blob.size,
                        "sha256": blob.lfs_sha256,
                        "pointerSize": len(lfs_pointer(blob.lfs_sha256, blob.size)),
                    }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.owner,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(card.get("tags") or []),
            "siblings": siblings,
        }
        if card:
            info["cardData"] = card
            for key in ("library_name", "pipeline_tag"):
                if card.get(key):
                    info[key] = card[key]
        config_blob = commit.files.get("config.json")
        if config_blob is not None:
            try:
                config = json.loads(self.state._content(config_blob))
                info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
            except ValueError:
                pass
        return info

    def _refs(self, repo: Repo) -> dict[str, Any]:
        def ref(name: str, oid: str) -> dict[str, str]:
            return {"name": name, "ref": name if name.startswith("refs/") else f"refs/heads/{name}", "targetCommit": oid}

        branches = [ref(n, o) for n, o in repo.refs.items() if not n.startswith("refs/pr/")]
        prs = [ref(n, o) for n, o in repo.refs.items() if n.startswith("refs/pr/")]
        return {"branches": branches, "converts": [], "tags": [], "pullRequests": prs}

    def _create_branch(self, repo: Repo, branch: str, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if branch in repo.refs:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        repo.refs[branch] = self._commit(repo, payload.get("startingPoint") or "main").oid
        return 200, {}, {}

    def _validate_yaml(self, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        try:
            metadata = _front_matter(payload.get("content") or "")
        except ValueError as error:
            return 400, {"errors": [{"message": str(error)}], "warnings": []}, {}
        errors = []
        base_models = metadata.get("base_model") or []
        for base in [base_models] if isinstance(base_models, str) else base_models:
            if not isinstance(base, str) or not re.match(r"^[\w.-]+(/[\w.-]+)?$", base):
                errors.append({"message": f'"base_model" must be a Hub model id, got {base!r}'})
        if metadata.get("tags") is not None and not isinstance(metadata["tags"], list):
            errors.append({"message": '"tags" must be a list'})
        if errors:
            return 400, {"errors": errors, "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    # ---- uploads ------------------------------------------------------------------------------

    def _is_lfs(self, commit: Commit, path: str, size: int, sample: bytes) -> bool:
        attributes = commit.files.get(".gitattributes")
        text = self.state._content(attributes).decode() if attributes else ""
        patterns = [line.split()[0] for line in text.splitlines() if "filter=lfs" in line and line.split()]
        name = path.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatch(path, p) or ("/" not in p and fnmatch.fnmatch(name, p)) for p in patterns):
            return True
        return size >= LFS_SIZE_THRESHOLD or b"\0" in sample

    def _preupload(self, repo: Repo, revision: str, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        commit = self._commit(repo, revision) if not self.query.get("create_pr") else self._commit(repo, "main")
        files = []
        for entry in payload.get("files") or []:
            path, size = entry["path"], int(entry["size"])
            sample = base64.b64decode(entry.get("sample") or "")
            mode = "lfs" if self._is_lfs(commit, path, size, sample) else "regular"
            existing = commit.files.get(path)
            oid = None
            if existing is not None:
                oid = existing.lfs_sha256 if mode == "lfs" else existing.git_oid
            files.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return 200, {"files": files, "commitOid": commit.oid}, {}

    def _lfs_batch(self, repo_id: str, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        self._repo(repo_id, write=True)
        if payload.get("operation") != "upload":
            raise HubError(400, "This test hub only implements LFS uploads.")
        objects = []
        for item in payload.get("objects") or []:
            oid, size = str(item["oid"]), int(item["size"])
            if oid in self.state.lfs_objects and len(self.state.lfs_objects[oid]) == size:
                objects.append({"oid": oid, "size": size})  # already stored: no actions
                continue
            ticket = secrets.token_urlsafe(16)
            self.state.lfs_tickets[ticket] = (repo_id, oid, size)
            objects.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        "upload": {"href": f"{self.endpoint}/__lfs_upload/{ticket}", "header": {}},
                        "verify": {"href": f"{self.endpoint}/{repo_id}.git/info/lfs/objects/verify", "header": {}},
                    },
                }
            )
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, {"Content-Type": "application/vnd.git-lfs+json"}

    def _lfs_put(self, ticket: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        if ticket not in self.state.lfs_tickets:
            raise HubError(403, "Unknown or expired upload URL.")
        repo_id, oid, size = self.state.lfs_tickets.pop(ticket)
        if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match the announced object (oid {oid}, size {size}).")
        self.state.lfs_objects[oid] = body
        self.state.lfs_uploads.append({"repo_id": repo_id, "oid": oid, "size": size})
        return 200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}

    def _lfs_verify(self, repo_id: str, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        self._repo(repo_id, write=True)
        oid, size = str(payload.get("oid")), int(payload.get("size", -1))
        if oid not in self.state.lfs_objects or len(self.state.lfs_objects[oid]) != size:
            raise HubError(404, f"LFS object {oid} (size {size}) was not uploaded.")
        self.state.lfs_verified.add(oid)
        return 200, {"message": "verified"}, {}

    def _create_commit(self, repo: Repo, revision: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "A commit payload starts with a header line.")
        header = lines[0]["value"]
        if not header.get("summary"):
            raise HubError(400, "The commit summary is required.")
        create_pr = self.query.get("create_pr") == "1"
        branch = unquote(revision)
        parent = self._commit(repo, branch)
        if header.get("parentCommit") and header["parentCommit"] != parent.oid:
            raise HubError(412, "A commit has happened since the given parentCommit; pull and retry.")
        files = dict(parent.files)
        inline, lfs = [], []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path", "")
            if key == "file":
                data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
                if self._is_lfs(parent, path, len(data), data[:512]):
                    raise HubError(400, f"Your push was rejected: {path} must be stored with LFS (binary or matches .gitattributes).")
                files[path] = Blob(size=len(data), git_oid=git_blob_oid(data), data=data)
                inline.append(path)
            elif key == "lfsFile":
                oid = value.get("oid")
                stored = self.state.lfs_objects.get(oid)
                if stored is None or ("size" in value and len(stored) != int(value["size"])):
                    raise HubError(400, f"Your push was rejected because an LFS pointer pointed to a file that does not exist: {path}")
                files[path] = Blob(size=len(stored), git_oid=git_blob_oid(lfs_pointer(oid, len(stored))), lfs_sha256=oid)
                lfs.append(path)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                for name in [n for n in files if n.startswith(prefix)]:
                    del files[name]
            else:
                raise HubError(400, f"Unknown commit operation {key!r}.")
        commit = Commit(
            oid=secrets.token_hex(20),
            title=header["summary"],
            description=header.get("description") or "",
            date=_now(),
            parent=parent.oid,
            files=files,
            inline_paths=inline,
            lfs_paths=lfs,
        )
        repo.commits[commit.oid] = commit
        pr_url = None
        if create_pr:
            number = 1 + sum(1 for name in repo.refs if name.startswith("refs/pr/"))
            repo.refs[f"refs/pr/{number}"] = commit.oid
            pr_url = f"{self.endpoint}/{repo.repo_id}/discussions/{number}"
        else:
            repo.refs[branch] = commit.oid
        return (
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.endpoint}/{repo.repo_id}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            },
            {},
        )

    # ---- reading ------------------------------------------------------------------------------

    def _entry(self, path: str, blob: Blob | None, commit: Commit, expand: bool) -> dict[str, Any]:
        if blob is None:
            entry: dict[str, Any] = {
                "type": "directory",
                "oid": hashlib.sha1(f"{commit.oid}:{path}".encode()).hexdigest(),
                "size": 0,
                "path": path,
            }
        else:
            entry = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
            if blob.lfs_sha256:
                entry["lfs"] = {"oid": blob.lfs_sha256, "size": blob.size, "pointerSize": len(lfs_pointer(blob.lfs_sha256, blob.size))}
        if expand:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return entry

    def _tree(self, repo: Repo, revision: str, folder: str) -> tuple[int, Any, dict[str, str]]:
        commit = self._commit(repo, revision)
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        expand = self.query.get("expand", "").lower() in ("1", "true")
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, f"{folder} does not exist on {revision}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        entries: dict[str, dict[str, Any]] = {}
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                if depth > 1 and not recursive:
                    break
                sub = prefix + "/".join(parts[:depth])
                entries.setdefault(sub, self._entry(sub, None, commit, expand))
            if recursive or len(parts) == 1:
                entries[path] = self._entry(path, commit.files[path], commit, expand)
        ordered = sorted(entries.values(), key=lambda e: (e["type"] != "directory", e["path"]))
        return 200, ordered, {}

    def _paths_info(self, repo: Repo, revision: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        commit = self._commit(repo, revision)
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            payload = self._json(body)
            paths, expand = payload.get("paths") or [], bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["False"])[-1].lower() == "true"
        result = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                result.append(self._entry(path, commit.files[path], commit, expand))
            elif any(p.startswith(path + "/") for p in commit.files):
                result.append(self._entry(path, None, commit, expand))
        return 200, result, {}

    def _resolve(self, repo_id: str, revision: str, path: str) -> tuple[int, Any, dict[str, str]]:
        repo = self._repo(repo_id)
        commit = self._commit(repo, revision)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        data = self.state._content(blob)
        headers = {
            "ETag": f'"{blob.etag}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        if blob.lfs_sha256:
            # On the real Hub this response is a redirect to a CDN; the linked headers describe the LFS object.
            headers.update({"X-Linked-Etag": f'"{blob.lfs_sha256}"', "X-Linked-Size": str(blob.size)})
        byte_range = re.match(r"^bytes=(\d*)-(\d*)$", self.headers.get("Range", "").strip())
        if byte_range and (byte_range.group(1) or byte_range.group(2)):
            start = int(byte_range.group(1) or 0)
            end = int(byte_range.group(2)) if byte_range.group(2) else len(data) - 1
            if start >= len(data) and len(data) > 0:
                raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            end = min(end, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, data[start : end + 1], headers
        return 200, data, headers


def _front_matter(content: str) -> dict[str, Any]:
    """The YAML metadata block of a README.md (empty when there is none); ValueError when it does not parse."""
    import yaml

    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.DOTALL)
    if not match:
        return {}
    try:
        metadata = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"Invalid YAML metadata: {error}") from None
    if not isinstance(metadata, dict):
        raise ValueError("The YAML metadata must be a mapping.")
    return metadata


def _card_metadata(blob: Blob | None, state: HubState) -> dict[str, Any]:
    if blob is None:
        return {}
    try:
        return _front_matter(state._content(blob).decode("utf-8", errors="replace"))
    except ValueError:
        return {}
