"""A local stand-in for the Hugging Face Hub endpoints that `huggingface_hub` calls when we publish.

It speaks exactly what `HfApi.whoami`, `create_repo`, `create_branch`, `repo_info` and
`create_commit` send (huggingface_hub 1.x, `hf_api.py`, `_commit_api.py`, `lfs.py`):

    GET  /api/whoami-v2                                      the token's user
    POST /api/repos/create                                   {"name", "organization", "type", "visibility"}
    GET  /api/{models|datasets}/{ns}/{name}[/revision/{rev}] repo info (id, sha, private, siblings)
    POST /api/{models|datasets}/{ns}/{name}/branch/{branch}  a branch from the default one
    POST /api/validate-yaml                                  the README's metadata header must be YAML
    POST /api/{models|datasets}/{ns}/{name}/preupload/{rev}  "regular" or "lfs" per file, with the oid there
    POST /[datasets/]{ns}/{name}.git/info/lfs/objects/batch  the git-LFS batch API (basic transfer)
    PUT  /fake-lfs/{oid}                                     the LFS object's bytes (sha256 checked)
    POST /api/{models|datasets}/{ns}/{name}/commit/{rev}     the NDJSON commit: header, file (base64), lfsFile

Every request but the LFS PUT (a pre-signed storage URL on the real Hub) must carry
`Authorization: Bearer <token>` with a token the server knows; a token that may only read gets 403
on writes, and a user writes only under their own namespace (`alice/...` for alice's token), so a
test sees whose token made a push. What was pushed is readable in-process
(`FakeHubState.files(...)`, `.commits(...)`), and each request is logged as method, path and
whether it was authenticated, never the header itself.

Xet storage is not spoken: tests set `huggingface_hub.constants.HF_HUB_DISABLE_XET`, so content
goes through the LFS path; the commit API, the only part that decides what a repository holds, is
the same for both.

In tests: `with running_fake_hub(FakeHubConfig(tokens={"hf_secret": "alice"})) as hub: hub.endpoint`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
import yaml
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_REPO_KINDS = {"models": "model", "datasets": "dataset"}
_DEFAULT_BRANCH = "main"


class FakeHubConfig(BaseModel):
    tokens: dict[str, str] = Field(
        default_factory=lambda: {"hf_fake_write_token": "alice"},
        description="Token -> user name of the tokens the server accepts.",
    )
    read_only_tokens: set[str] = Field(
        default_factory=set, description="Tokens that authenticate but may not write (403 on writes)."
    )
    lfs_threshold_bytes: int = Field(
        default=1024, description="Files at least this large are 'lfs' in preupload (the Hub: 10 MB)."
    )


@dataclass
class FakeCommit:
    oid: str
    summary: str
    description: str
    files: dict[str, bytes]


@dataclass
class FakeRepo:
    repo_type: str
    repo_id: str
    private: bool
    branches: dict[str, list[FakeCommit]] = field(default_factory=dict)
    lfs_paths: dict[str, set[str]] = field(default_factory=dict)

    def head(self, branch: str) -> FakeCommit | None:
        commits = self.branches.get(branch)
        return commits[-1] if commits else None


def git_blob_sha1(content: bytes) -> str:
    """The oid git gives a regular file: what preupload reports and the client compares."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class RequestRecord:
    method: str
    path: str
    authenticated: bool
    status: int


class FakeHubState:
    """Repositories, LFS objects and the request log, shared by the app and the test."""

    def __init__(self, config: FakeHubConfig) -> None:
        self.config = config
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[RequestRecord] = []
        self.raw_bodies: list[bytes] = []  # every request body, to look for leaked secrets
        self.lock = threading.Lock()

    def repo(self, repo_type: str, repo_id: str) -> FakeRepo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_type: str, repo_id: str, branch: str = _DEFAULT_BRANCH) -> dict[str, bytes]:
        """The files at the head of `branch` (empty when nothing was committed there)."""
        head = self.repo(repo_type, repo_id).head(branch)
        return dict(head.files) if head else {}

    def commits(self, repo_type: str, repo_id: str, branch: str = _DEFAULT_BRANCH) -> list[FakeCommit]:
        return list(self.repo(repo_type, repo_id).branches.get(branch, []))


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class FakeHubApp:
    """Routes and handlers; the state is shared with the test through `FakeHubHandle`."""

    def __init__(self, state: FakeHubState) -> None:
        self.state = state
        prefix = "/api/{kind}/{namespace}/{name}"
        self.app = Starlette(
            routes=[
                Route("/api/whoami-v2", self.whoami, methods=["GET"]),
                Route("/api/repos/create", self.create_repo, methods=["POST"]),
                Route("/api/validate-yaml", self.validate_yaml, methods=["POST"]),
                Route(prefix, self.repo_info, methods=["GET"]),
                Route(prefix + "/revision/{revision:path}", self.repo_info, methods=["GET"]),
                Route(prefix + "/branch/{branch:path}", self.create_branch, methods=["POST"]),
                Route(prefix + "/preupload/{revision:path}", self.preupload, methods=["POST"]),
                Route(prefix + "/commit/{revision:path}", self.commit, methods=["POST"]),
                Route("/{namespace}/{name}/info/lfs/objects/batch", self.lfs_batch, methods=["POST"]),
                Route(
                    "/datasets/{namespace}/{name}/info/lfs/objects/batch", self.lfs_batch, methods=["POST"]
                ),
                Route("/fake-lfs/{oid}", self.lfs_put, methods=["PUT"]),
            ]
        )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_box: dict[str, int] = {}

        async def send_recording(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
            await send(message)

        headers = dict(scope.get("headers") or [])
        await self.app(scope, receive, send_recording)
        with self.state.lock:
            self.state.requests.append(
                RequestRecord(
                    method=scope["method"],
                    path=scope["path"],
                    authenticated=b"authorization" in headers,
                    status=status_box.get("status", 0),
                )
            )

    # -- helpers -------------------------------------------------------------------------------------
    def _user(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return None
        return self.state.config.tokens.get(header.removeprefix("Bearer "))

    def _writer(self, request: Request) -> str | JSONResponse:
        user = self._user(request)
        if user is None:
            return _error(401, "Invalid credentials in Authorization header")
        token = request.headers["authorization"].removeprefix("Bearer ")
        if token in self.state.config.read_only_tokens:
            return _error(403, "You don't have the rights to write with this token (read only)")
        return user

    def _writable_repo(self, request: Request, kind: str | None = None) -> FakeRepo | JSONResponse:
        """The repository, when the token may write to it (its user owns the namespace)."""
        writer = self._writer(request)
        if isinstance(writer, Response):
            return writer
        repo = self._find_repo(request, kind)
        if isinstance(repo, Response):
            return repo
        if repo.repo_id.split("/")[0] != writer:
            return _error(403, f"{writer} may not write to {repo.repo_id}")
        return repo

    def _find_repo(self, request: Request, kind: str | None = None) -> FakeRepo | JSONResponse:
        kind = kind or request.path_params["kind"]
        repo_type = _REPO_KINDS.get(kind)
        name = request.path_params["name"].removesuffix(".git")
        repo_id = f"{request.path_params['namespace']}/{name}"
        repo = self.state.repos.get((repo_type or "", repo_id))
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        if repo.private and self._user(request) is None:
            return _error(404, "Repository not found", "RepoNotFound")  # as the Hub: no existence leak
        return repo

    async def _body(self, request: Request) -> bytes:
        body = await request.body()
        with self.state.lock:
            self.state.raw_bodies.append(body)
        return body

    # -- endpoints -----------------------------------------------------------------------------------
    async def whoami(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return _error(401, "Invalid credentials in Authorization header")
        token = request.headers["authorization"].removeprefix("Bearer ")
        role = "read" if token in self.state.config.read_only_tokens else "write"
        return JSONResponse(
            {
                "type": "user",
                "name": user,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}},
            }
        )

    async def create_repo(self, request: Request) -> Response:
        writer = self._writer(request)
        if isinstance(writer, Response):
            return writer
        payload = json.loads(await self._body(request))
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or writer
        if namespace != writer:
            return _error(403, f"You don't have the rights to create a repo under the namespace {namespace}")
        repo_id = f"{namespace}/{payload['name']}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{request.base_url}{prefix}{repo_id}"
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:  # the Hub's 409 names the repository too
                message = "You already created this repo"
                return JSONResponse(
                    {"error": message, "url": url}, status_code=409, headers={"X-Error-Message": message}
                )
            self.state.repos[(repo_type, repo_id)] = FakeRepo(
                repo_type=repo_type, repo_id=repo_id, private=private, branches={_DEFAULT_BRANCH: []}
            )
        return JSONResponse({"url": url, "name": repo_id, "id": uuid.uuid4().hex})

    async def repo_info(self, request: Request) -> Response:
        repo = self._find_repo(request)
        if isinstance(repo, Response):
            return repo
        revision = request.path_params.get("revision") or _DEFAULT_BRANCH
        if revision not in repo.branches:
            return _error(404, "Revision not found", "RevisionNotFound")
        head = repo.head(revision)
        return JSONResponse(
            {
                "id": repo.repo_id,
                "sha": head.oid if head else "0" * 40,
                "private": repo.private,
                "siblings": [{"rfilename": path} for path in sorted(head.files if head else {})],
            }
        )

    async def create_branch(self, request: Request) -> Response:
        repo = self._writable_repo(request)
        if isinstance(repo, Response):
            return repo
        branch = request.path_params["branch"]
        with self.state.lock:
            if branch in repo.branches:
                return _error(409, f"Branch {branch} already exists")
            repo.branches[branch] = list(repo.branches[_DEFAULT_BRANCH][-1:])
        return JSONResponse({})

    async def validate_yaml(self, request: Request) -> Response:
        content = json.loads(await self._body(request))["content"]
        if not content.startswith("---\n"):
            return JSONResponse({"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
        header = content[4:].split("\n---\n", 1)[0]
        try:
            metadata = yaml.safe_load(header)
        except yaml.YAMLError as exc:
            return JSONResponse({"errors": [{"message": f"invalid YAML: {exc}"}]}, status_code=400)
        if not isinstance(metadata, dict):
            return JSONResponse({"errors": [{"message": "metadata is not a mapping"}]}, status_code=400)
        return JSONResponse({"errors": [], "warnings": []})

    async def preupload(self, request: Request) -> Response:
        repo = self._writable_repo(request)
        if isinstance(repo, Response):
            return repo
        revision = request.path_params["revision"]
        if revision not in repo.branches:
            return _error(404, "Revision not found", "RevisionNotFound")
        head = repo.head(revision)
        lfs_here = repo.lfs_paths.get(revision, set())
        files = []
        for item in json.loads(await self._body(request))["files"]:
            mode = "lfs" if item["size"] >= self.state.config.lfs_threshold_bytes else "regular"
            oid = None
            if head and item["path"] in head.files:
                content = head.files[item["path"]]
                oid = (
                    hashlib.sha256(content).hexdigest()
                    if item["path"] in lfs_here
                    else git_blob_sha1(content)
                )
            files.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return JSONResponse({"files": files, "commitOid": head.oid if head else None})

    async def lfs_batch(self, request: Request) -> Response:
        kind = "datasets" if request.url.path.startswith("/datasets/") else "models"
        repo = self._writable_repo(request, kind)
        if isinstance(repo, Response):
            return repo
        payload = json.loads(await self._body(request))
        objects = []
        for item in payload["objects"]:
            entry: dict[str, Any] = {"oid": item["oid"], "size": item["size"]}
            if item["oid"] not in self.state.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{request.base_url}fake-lfs/{item['oid']}"}}
            objects.append(entry)
        return JSONResponse({"transfer": "basic", "objects": objects})

    async def lfs_put(self, request: Request) -> Response:
        oid = request.path_params["oid"]
        body = await request.body()
        if hashlib.sha256(body).hexdigest() != oid:
            return _error(400, "LFS object does not match its oid")
        with self.state.lock:
            self.state.lfs_objects[oid] = body
        return Response(status_code=200)

    async def commit(self, request: Request) -> Response:
        repo = self._writable_repo(request)
        if isinstance(repo, Response):
            return repo
        revision = request.path_params["revision"]
        if revision not in repo.branches:
            return _error(404, "Revision not found", "RevisionNotFound")
        if request.headers.get("content-type") != "application/x-ndjson":
            return _error(400, "the commit API takes application/x-ndjson")
        lines = [json.loads(line) for line in (await self._body(request)).splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return _error(400, "the first NDJSON line must be the commit header")
        header = lines[0]["value"]
        head = repo.head(revision)
        files = dict(head.files) if head else {}
        lfs_here = set(repo.lfs_paths.get(revision, set()))
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"]
            if key == "file":
                if value.get("encoding") != "base64":
                    return _error(400, f"{path}: only base64 file content is accepted")
                files[path] = base64.b64decode(value["content"])
                lfs_here.discard(path)
            elif key == "lfsFile":
                blob = self.state.lfs_objects.get(value["oid"])
                if blob is None or len(blob) != value.get("size", len(blob)):
                    return _error(422, f"{path}: LFS object {value['oid']} was never uploaded")
                files[path] = blob
                lfs_here.add(path)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    return _error(404, "A file with this name doesn't exist", "EntryNotFound")
                lfs_here.discard(path)
            elif key == "deletedFolder":
                for name in [name for name in files if name.startswith(path.rstrip("/") + "/")]:
                    del files[name]
                    lfs_here.discard(name)
            else:
                return _error(400, f"unknown commit operation {key!r}")
        oid = hashlib.sha1(json.dumps([header, sorted(files), time.time_ns()]).encode()).hexdigest()
        with self.state.lock:
            repo.branches[revision].append(
                FakeCommit(oid=oid, summary=header["summary"], description=header["description"], files=files)
            )
            repo.lfs_paths[revision] = lfs_here
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return JSONResponse(
            {
                "commitUrl": f"{request.base_url}{prefix}{repo.repo_id}/commit/{oid}",
                "commitOid": oid,
                "success": True,
            }
        )


@dataclass
class FakeHubHandle:
    endpoint: str
    state: FakeHubState


@contextlib.contextmanager
def running_fake_hub(config: FakeHubConfig | None = None) -> Iterator[FakeHubHandle]:
    """Serve on a free loopback port in a background thread; stopped on exit."""
    state = FakeHubState(config or FakeHubConfig())
    app = FakeHubApp(state)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="critical", access_log=False, lifespan="off", timeout_graceful_shutdown=2
        )
    )

    async def serve() -> None:
        await server.serve(sockets=[sock])

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name=f"fake-hub-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the fake Hub did not start on port {port}")
        time.sleep(0.01)
    try:
        yield FakeHubHandle(f"http://127.0.0.1:{port}", state)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
