"""A small Hugging Face Hub on 127.0.0.1 for tests: the real huggingface_hub client talks to it.

It implements what ``HfApi`` uses to publish and fetch a dataset, as the Hub answers it:
create a repo, validate a card's YAML, ask how each file should travel (``preupload``: Parquet
goes through LFS, the rest inline), the LFS batch API with upload and verify actions, the
NDJSON commit, repo info, the file tree and ``resolve`` downloads. Xet storage is not
implemented: tests switch huggingface_hub to plain LFS.

Every request is recorded (method, path, headers, body) so tests can check where the token went.
"""

import base64
import contextlib
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from huggingface_hub import constants, set_client_factory
from huggingface_hub.utils import _http

LFS_SUFFIXES = (".parquet", ".safetensors", ".bin")
"""Files the Hub stores through LFS whatever their size (its default .gitattributes rules)."""
LFS_MIN_BYTES = 10 * 1024 * 1024


def git_sha1(data: bytes) -> str:
    """Git's blob id, which the Hub reports as a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    """One commit of a repo: its id, message and the whole file tree after it."""

    oid: str
    summary: str
    files: dict[str, bytes]
    lfs: set[str]


@dataclass
class Repo:
    """A repository: its visibility and its commits, newest last."""

    repo_id: str
    repo_type: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        """The newest commit."""
        return self.commits[-1]

    def at(self, revision: str) -> Commit | None:
        """The commit that ``revision`` (main or a commit id) names."""
        if revision == "main":
            return self.head
        return next((c for c in self.commits if c.oid == revision), None)


@dataclass
class Request:
    """A request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    """Names lower-cased."""
    body: bytes


class FakeHub(ThreadingHTTPServer):
    """The Hub on 127.0.0.1; ``token`` is the only token it accepts."""

    daemon_threads = True

    def __init__(self, token: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):
        """A client that hung up early is not a server failure."""


def serving(token: str) -> FakeHub:
    """Start a FakeHub in a background thread; call ``shutdown()`` and ``server_close()`` when done."""
    hub = FakeHub(token)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    return hub


class _Handler(BaseHTTPRequestHandler):
    server: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        """Keep the test output clean."""

    # --- plumbing -------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload=None, headers: dict | None = None, raw: bytes | None = None):
        body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None):
        self._send(status, {"error": message}, {"X-Error-Code": code} if code else None)

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.server.token}"

    def _handle(self):
        body = self._body() if self.command in ("POST", "PUT") else b""
        with self.server.lock:
            self.server.requests.append(
                Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        try:
            with self.server.lock:
                self._route(parts, parse_qs(url.query), body)
        except (KeyError, ValueError, json.JSONDecodeError) as e:
            self._error(400, f"bad request: {e}")

    do_GET = do_POST = do_PUT = do_HEAD = _handle

    def _repo(self, repo_type: str, ns: str, name: str, *, write: bool) -> Repo | None:
        repo = self.server.repos.get(f"{ns}/{name}")
        if (write or (repo and repo.private)) and not self._authorized():
            self._error(401, "Invalid credentials in Authorization header")
            return None
        if repo is None or repo.repo_type != repo_type:
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        return repo

    # --- routes ---------------------------------------------------------------------------

    def _route(self, parts: list[str], query: dict, body: bytes):
        m = self.command
        if parts[:3] == ["api", "repos", "create"] and m == "POST":
            return self._create(json.loads(body))
        if parts[:2] == ["api", "validate-yaml"] and m == "POST":
            return self._validate(json.loads(body))
        if parts[0] == "api" and len(parts) >= 4 and parts[1].endswith("s"):
            repo_type, ns, name, rest = parts[1][:-1], parts[2], parts[3], parts[4:]
            repo = self._repo(repo_type, ns, name, write=m in ("POST", "PUT"))
            if repo is None:
                return None
            if rest[:1] == ["preupload"] and m == "POST":
                return self._preupload(repo, json.loads(body))
            if rest[:1] == ["commit"] and m == "POST":
                return self._commit(repo, body)
            if (not rest or rest[0] == "revision") and m == "GET":
                return self._info(repo, rest[1] if len(rest) > 1 else "main")
            if rest[:1] == ["tree"] and m == "GET":
                return self._tree(repo, rest[1], "/".join(rest[2:]), query)
        if parts[0] == "lfs" and m == "PUT":
            return self._lfs_put(parts[1], body)
        if parts[0] == "lfs" and parts[-1] == "verify" and m == "POST":
            return self._lfs_verify(json.loads(body))
        if (
            parts[0] == "datasets"
            and len(parts) >= 3
            and parts[2].endswith(".git")
            and parts[3:] == ["info", "lfs", "objects", "batch"]
        ):
            repo = self._repo("dataset", parts[1], parts[2][: -len(".git")], write=True)
            return None if repo is None else self._lfs_batch(json.loads(body))
        if parts[0] == "datasets" and len(parts) >= 5 and parts[3] == "resolve" and m in ("GET", "HEAD"):
            repo = self._repo("dataset", parts[1], parts[2], write=False)
            return None if repo is None else self._resolve(repo, parts[4], "/".join(parts[5:]))
        return self._error(404, f"no route for {m} {self.path}")

    def _create(self, payload: dict):
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        repo_id = f"{payload['organization']}/{payload['name']}"
        repo_type = payload.get("type") or "model"
        url = f"{self.server.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        if repo_id in self.server.repos:
            return self._send(409, {"error": "You already created this repo", "url": url})
        gitattributes = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
        first = Commit(
            hashlib.sha1(f"{repo_id} initial".encode()).hexdigest(),
            "initial commit",
            {".gitattributes": gitattributes},
            set(),
        )
        self.server.repos[repo_id] = Repo(repo_id, repo_type, payload.get("visibility") == "private", [first])
        return self._send(200, {"url": url, "name": repo_id})

    def _validate(self, payload: dict):
        text = payload["content"]
        if not text.startswith("---\n"):
            return self._send(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
        try:
            meta = yaml.safe_load(text[4 : text.index("\n---", 4)])
        except (ValueError, yaml.YAMLError) as e:
            return self._send(400, {"errors": [{"message": f"invalid YAML: {e}"}]})
        if not isinstance(meta, dict):
            return self._send(400, {"errors": [{"message": "metadata must be a mapping"}]})
        return self._send(200, {"errors": [], "warnings": []})

    def _preupload(self, repo: Repo, payload: dict):
        files = []
        for f in payload["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_BYTES
            old = repo.head.files.get(f["path"])
            oid = None if old is None else hashlib.sha256(old).hexdigest() if lfs else git_sha1(old)
            files.append(
                {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        return self._send(200, {"files": files, "commitOid": repo.head.oid})

    def _lfs_batch(self, payload: dict):
        objects = []
        for o in payload["objects"]:
            entry = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            if o["oid"] not in self.server.lfs_store:  # already stored: no actions, the client skips it
                entry["actions"] = {
                    "upload": {"href": f"{self.server.url}/lfs/{o['oid']}", "header": {}},
                    "verify": {"href": f"{self.server.url}/lfs/{o['oid']}/verify", "header": {}},
                }
            objects.append(entry)
        return self._send(200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, oid: str, body: bytes):
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(400, "content does not match its sha256")
        self.server.lfs_store[oid] = body
        return self._send(200, {})

    def _lfs_verify(self, payload: dict):
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        stored = self.server.lfs_store.get(payload["oid"])
        if stored is None or len(stored) != payload["size"]:
            return self._error(404, "object not uploaded")
        return self._send(200, {})

    def _commit(self, repo: Repo, body: bytes):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files, lfs = dict(repo.head.files), set(repo.head.lfs)
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.discard(value["path"])
            elif key == "lfsFile":
                data = self.server.lfs_store.get(value["oid"])
                if data is None:
                    return self._error(400, f"LFS object of {value['path']} was never uploaded")
                files[value["path"]] = data
                lfs.add(value["path"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    return self._error(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                lfs.discard(value["path"])
            elif key == "deletedFolder":
                for p in [p for p in files if p.startswith(value["path"].rstrip("/") + "/")]:
                    files.pop(p)
                    lfs.discard(p)
        oid = hashlib.sha1(
            repo.head.oid.encode() + json.dumps(sorted((p, git_sha1(d)) for p, d in files.items())).encode()
        ).hexdigest()
        repo.commits.append(Commit(oid, header["summary"], files, lfs))
        url = f"{self.server.url}/{'datasets/' if repo.repo_type == 'dataset' else ''}{repo.repo_id}"
        return self._send(200, {"commitUrl": f"{url}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None})

    def _info(self, repo: Repo, revision: str):
        commit = repo.at(revision)
        if commit is None:
            return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        siblings = [{"rfilename": p} for p in sorted(commit.files)]
        return self._send(
            200, {"id": repo.repo_id, "sha": commit.oid, "private": repo.private, "siblings": siblings, "tags": []}
        )

    def _tree(self, repo: Repo, revision: str, prefix: str, query: dict):
        commit = repo.at(revision)
        if commit is None:
            return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        base = f"{prefix.rstrip('/')}/" if prefix else ""
        entries, folders = [], set()
        for path, data in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            inner = path[len(base) :].split("/")
            if len(inner) > 1 and not recursive:
                folders.add(base + inner[0])
                continue
            folders.update(base + "/".join(inner[:i]) for i in range(1, len(inner)))
            entry = {"type": "file", "path": path, "size": len(data), "oid": git_sha1(data)}
            if path in commit.lfs:
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        entries += [
            {"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in sorted(folders)
        ]
        return self._send(200, entries)

    def _resolve(self, repo: Repo, revision: str, path: str):
        commit = repo.at(revision)
        if commit is None or path not in commit.files:
            return self._error(404, "Entry not found", "EntryNotFound")
        data = commit.files[path]
        etag = hashlib.sha256(data).hexdigest() if path in commit.lfs else git_sha1(data)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"'}
        if path in commit.lfs:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        return self._send(200, headers=headers, raw=data)


@contextlib.contextmanager
def local_hub(monkeypatch, tmp_path: Path, token: str):
    """A FakeHub on 127.0.0.1 as $HF_ENDPOINT accepting ``token``; huggingface_hub may reach nothing
    else and has no login.

    It uses plain LFS (Xet's CAS is not reproduced) and telemetry is off: with it on,
    huggingface_hub asks huggingface.co for its agent registry.
    """
    srv = serving(token)
    elsewhere = []

    def local_only(request):
        if request.url.host != "127.0.0.1":
            elsewhere.append(str(request.url))
            raise RuntimeError(f"a test tried to reach {request.url.host}")

    def factory():
        client = _http.default_client_factory()
        client.event_hooks = {**client.event_hooks, "request": [*client.event_hooks["request"], local_only]}
        return client

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the fake Hub speaks plain LFS
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    set_client_factory(factory)
    try:
        yield srv
    finally:
        set_client_factory(_http.default_client_factory)
        srv.shutdown()
        srv.server_close()
    assert elsewhere == []
