"""A fake Hugging Face Hub: enough of the HTTP API for the real ``huggingface_hub`` client, offline.

No installable server accepts Hub uploads, so tests of ``push_to_hub`` run the real client
(``HfApi``, ``hf_hub_download``, ``ModelCard``, timm's ``hf-hub:`` and transformers'
``from_pretrained``) against this standard-library server on 127.0.0.1. Repos live in memory.

    from hub_server import fake_hub  # noqa: F401  (the fixture; tests/ is on sys.path under pytest)

    def test_push(fake_hub):
        HfApi().create_repo("alice/x")                       # HF_TOKEN is set to fake_hub.token
        HfApi().upload_folder(repo_id="alice/x", folder_path=out)
        assert [c.summary for c in fake_hub.commits("alice/x")] == ["Upload folder using huggingface_hub"]
        assert fake_hub.repos[("model", "alice/x")]["main"]["config.json"] == (out / "config.json").read_bytes()

Pointing the client here: ``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``HF_HUB_DISABLE_XET`` and the cache paths once, at import; in a pytest session it is already
imported (and tests/conftest.py sets ``HF_HUB_OFFLINE=1``), so env vars alone do nothing.
:func:`point_clients_at` therefore patches ``huggingface_hub.constants`` (read at call time by
``HfApi()``, ``hf_hub_download``, ``snapshot_download``, ``ModelCard``, timm and transformers) and
the endpoint of the module-level ``HfApi`` behind ``huggingface_hub.create_repo``/``model_info``/...
(bound at import), and also sets the env vars for subprocesses. Every request huggingface_hub's
shared HTTP client makes must go to loopback: a request hook raises :class:`RealNetworkError`
otherwise (libraries with their own HTTP clients, e.g. ``datasets`` or ``torch.hub``, are not covered).

Served (see ROUTES): whoami-v2, repos/create, validate-yaml, repo info (+ /revision/{rev}), tree,
refs, preupload, LFS batch + upload + verify, commit, branch, HEAD/GET resolve. Not served: pull
requests (create_pr), tags, Xet, multipart LFS, gated repos, pagination; new repos have no .gitattributes.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import re
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

# The real Hub decides by .gitattributes and content; the client only needs *some* files to go via LFS.
LFS_MIN_SIZE = 1_000_000
LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".png", ".jpg", ".npz", ".onnx", ".msgpack")
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}  # in /{prefix}{id}/resolve/... URLs
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

_REPO = r"(?P<ns>[\w.-]+)/(?P<name>[\w.-]+)"
_API = rf"/api/(?P<type>model|dataset|space)s/{_REPO}"
_WEB = rf"/(?:(?P<type>dataset|space)s/)?{_REPO}"  # models have no prefix in web/git URLs
ROUTES = [  # (methods, path regex, endpoint name = handler FakeHub._<name> and counter key)
    ({"GET"}, r"/api/whoami-v2", "whoami"),
    ({"POST"}, r"/api/repos/create", "create_repo"),
    ({"POST"}, r"/api/validate-yaml", "validate_yaml"),
    ({"GET"}, r"/api/agent-harnesses", "agent_harnesses"),
    ({"GET"}, rf"{_API}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
    ({"GET"}, rf"{_API}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
    ({"GET"}, rf"{_API}/refs", "refs"),
    ({"POST"}, rf"{_API}/preupload/(?P<rev>[^/]+)", "preupload"),
    ({"POST"}, rf"{_API}/commit/(?P<rev>[^/]+)", "commit"),
    ({"POST"}, rf"{_API}/branch/(?P<branch>[^/]+)", "create_branch"),
    ({"POST"}, rf"{_WEB}\.git/info/lfs/objects/batch", "lfs_batch"),
    ({"PUT"}, r"/_lfs/(?P<oid>[0-9a-f]{64})", "lfs_upload"),  # stands in for the presigned S3 URL
    ({"POST"}, r"/_lfs/(?P<oid>[0-9a-f]{64})/verify", "lfs_verify"),
    ({"HEAD", "GET"}, rf"{_WEB}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]
ROUTES = [(methods, re.compile(regex), name) for methods, regex, name in ROUTES]


def git_sha1(data: bytes) -> str:
    """The git blob id, which the client compares with preupload's ``oid`` to skip unchanged files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, size: int) -> bool:
    return size >= LFS_MIN_SIZE or path.endswith(LFS_SUFFIXES)


def file_oid(path: str, data: bytes) -> str:
    """What preupload reports as a file's current oid: sha256 for LFS files, git sha1 otherwise."""
    return hashlib.sha256(data).hexdigest() if is_lfs(path, len(data)) else git_sha1(data)


class RealNetworkError(RuntimeError):
    """A Hub client tried to reach a non-loopback host during a test."""


class HubError(Exception):
    """An HTTP error answered the way the Hub does (``X-Error-Code`` drives the client's exception type)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class Commit:
    oid: str
    revision: str  # the branch it was made on
    summary: str
    description: str
    added: list[str]  # paths written by `file`/`lfsFile` lines, in request order
    deleted: list[str]  # paths removed by `deletedFile`/`deletedFolder` lines
    files: dict[str, bytes] = field(repr=False)  # the whole tree after the commit


@dataclass
class Request:
    method: str
    endpoint: str
    args: dict  # unquoted path parameters
    query: dict
    headers: dict
    body: bytes
    user: dict | None = None  # the token's owner, None without a token

    def json(self):
        return json.loads(self.body or b"{}")


class FakeHub:
    """In-memory Hub. ``repos[(type, id)][branch]`` is ``{path: bytes}``; ``requests`` counts by endpoint name."""

    def __init__(self, token: str = "hf_test", user: str = "alice", orgs=("fastft-org",)):
        self.token, self.user, self.orgs = token, user, list(orgs)
        self.tokens: dict[str, dict] = {}
        self.add_token(token, user, orgs)
        self.repos: dict[tuple[str, str], dict[str, dict[str, bytes]]] = {}
        self.private: set[tuple[str, str]] = set()
        self.heads: dict[tuple[str, str], dict[str, str]] = {}  # branch -> commit oid
        self.snapshots: dict[tuple[str, str], dict[str, dict[str, bytes]]] = {}  # commit oid -> tree
        self._commits: dict[tuple[str, str], list[Commit]] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> bytes, filled by the LFS PUT
        self.requests: Counter = Counter()  # endpoint name -> count, failed requests included
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self.errors: list[str] = []  # tracebacks of server bugs (answered 500)
        self.client_sleeps: list[float] = []  # the client's retry backoffs, skipped by point_clients_at
        self.fail_status: int | None = None  # set to 401/503/...: matching requests answer that
        self.fail_endpoints: set[str] | None = None  # None: every endpoint fails
        self._lock = threading.RLock()
        self._ids = itertools.count()
        self._server: ThreadingHTTPServer | None = None

    # ---- lifecycle and test helpers ----
    def add_token(self, token: str, user: str, orgs=(), role: str = "write") -> None:
        self.tokens[token] = {"name": user, "orgs": list(orgs), "role": role}

    def start(self) -> "FakeHub":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True  # keep-alive connections must not block shutdown
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def commits(self, repo_id: str, repo_type: str = "model", revision: str | None = None) -> list[Commit]:
        """Commits made through the commit API, oldest first (repo creation is not one)."""
        return [c for c in self._commits[(repo_type, repo_id)] if revision in (None, c.revision)]

    @contextlib.contextmanager
    def failing(self, status: int, *endpoints: str):
        """Answer ``status`` to every request (or only to ``endpoints``) inside the block.

        The client retries 5xx/429 on preupload, LFS and resolve (5 retries after 1, 2, 4, 8, 8 s)
        but not on whoami, create_repo or commit; the fixture skips those sleeps (see client_sleeps).
        """
        self.fail_status, self.fail_endpoints = status, set(endpoints) or None
        try:
            yield self
        finally:
            self.fail_status = self.fail_endpoints = None

    def client_env(self, home: str | Path) -> dict[str, str]:
        """Env vars that point a *fresh* process's huggingface_hub here, with its caches under ``home``."""
        home = Path(home)
        return {"HF_ENDPOINT": self.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
                "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
                "HF_XET_CACHE": str(home / "xet"), "HF_TOKEN_PATH": str(home / "token"), "HF_TOKEN": self.token,
                "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    # ---- request plumbing ----
    def handle(self, req: Request) -> tuple[int, bytes, dict]:
        try:
            if self.fail_status and (self.fail_endpoints is None or req.endpoint in self.fail_endpoints):
                raise HubError(self.fail_status, "Invalid credentials in Authorization header"
                               if self.fail_status == 401 else f"FakeHub answers {self.fail_status}")
            req.user = self._auth(req)
            with self._lock:  # one request at a time mutates state: commits apply atomically
                out = getattr(self, f"_{req.endpoint}")(req)
            status, body, headers = out if isinstance(out, tuple) else (200, out, {})
            if not isinstance(body, bytes):
                body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
            return status, body, headers
        except HubError as err:
            headers = {"Content-Type": "application/json", "X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            return err.status, json.dumps({"error": err.message}).encode(), headers
        except Exception:  # a bug here: say so in the test, not as a mysterious client error
            self.errors.append(traceback.format_exc())
            return 500, b'{"error": "FakeHub bug, see hub.errors"}', {"Content-Type": "application/json"}

    def _auth(self, req: Request) -> dict | None:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if not token:
            return None
        if scheme.lower() != "bearer" or token not in self.tokens:
            # This exact message makes the client raise a 401 rather than RepositoryNotFoundError.
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _writable(self, req: Request, ns: str) -> None:
        if req.user is None:
            raise HubError(401, "Invalid username or password.")
        if req.user["role"] != "write" or ns not in (req.user["name"], *req.user["orgs"]):
            raise HubError(403, f"You don't have the rights to write to the namespace {ns}")

    def _repo(self, req: Request, write: bool = False) -> tuple[str, str]:
        key = (req.args.get("type") or "model", f"{req.args['ns']}/{req.args['name']}")
        if write:
            self._writable(req, req.args["ns"])
        readable = req.user is not None and req.args["ns"] in (req.user["name"], *req.user["orgs"])
        if key not in self.repos or (key in self.private and not readable):
            # The Hub answers 401 for missing and for private repos alike, so as not to leak names.
            raise HubError(401 if req.user is None else 404, "Repository not found", "RepoNotFound")
        return key

    def _at_revision(self, key, rev: str) -> tuple[str, dict[str, bytes]]:
        """A branch name or a commit id -> (commit id, tree)."""
        oid = self.heads[key].get(rev) or (rev if rev in self.snapshots[key] else None)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return oid, self.snapshots[key][oid]

    def _new_oid(self, *parts) -> str:
        return hashlib.sha1(json.dumps([next(self._ids), *parts]).encode()).hexdigest()

    # ---- endpoints ----
    def _whoami(self, req):
        if req.user is None:
            raise HubError(401, "Invalid username or password.")
        return {"type": "user", "name": req.user["name"], "fullname": req.user["name"],
                "orgs": [{"type": "org", "name": org, "roleInOrg": "admin"} for org in req.user["orgs"]],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": req.user["role"]}}}

    def _create_repo(self, req):
        body = req.json()
        repo_type = body.get("type") or "model"
        ns = body.get("organization") or (req.user or {}).get("name", "")
        self._writable(req, ns)
        key = (repo_type, f"{ns}/{body['name']}")
        if key in self.repos:
            return 409, {"error": f"You already created this {repo_type} repo", "url": self._web_url(key)}, {}
        root = self._new_oid(key)  # a new repo is an empty root commit on main
        self.repos[key], self.heads[key], self.snapshots[key] = {"main": {}}, {"main": root}, {root: {}}
        self._commits[key] = []
        if body.get("private") or body.get("visibility") == "private":
            self.private.add(key)
        return {"url": self._web_url(key), "name": key[1], "id": key[1]}

    def _validate_yaml(self, req):
        import yaml

        content = req.json().get("content", "")
        match = re.match(r"---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
            if meta is not None and not isinstance(meta, dict):
                raise ValueError("metadata must be a YAML mapping")
        except Exception as err:
            return 400, {"errors": [{"message": f"Invalid YAML: {err}"}], "warnings": []}, {}
        return {"errors": [], "warnings": []}

    def _agent_harnesses(self, req):
        return {"standardEnvVars": [], "harnesses": {}}  # the client fetches this once, for its user agent

    def _repo_info(self, req):
        key = self._repo(req)
        oid, files = self._at_revision(key, req.args.get("rev") or "main")
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the only format the client parses
        info = {"id": key[1], "author": req.args["ns"], "sha": oid, "private": key in self.private,
                "disabled": False, "gated": False, "lastModified": now, "createdAt": now, "tags": [],
                "downloads": 0, "likes": 0, "cardData": _card_data(files.get("README.md")),
                "siblings": [{"rfilename": p, "size": len(d), "blobId": git_sha1(d), "lfs": _lfs_info(p, d, "sha256")}
                             for p, d in sorted(files.items())]}
        if key[0] == "model":
            info["modelId"] = key[1]
        return info

    def _tree(self, req):
        key = self._repo(req)
        _, files = self._at_revision(key, req.args["rev"])
        base = req.args.get("path", "").strip("/")
        recursive = req.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        prefix = base + "/" if base else ""
        if base and base not in files and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"{base} does not exist", "EntryNotFound")
        entries, folders = [], set()
        for path, data in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "path": path, "size": len(data), "oid": git_sha1(data),
                                **({"lfs": _lfs_info(path, data)} if is_lfs(path, len(data)) else {})})
        entries += [{"type": "directory", "path": d, "size": 0, "oid": git_sha1(d.encode())} for d in sorted(folders)]
        return entries  # one page: no `Link` header, so the client stops here

    def _refs(self, req):
        key = self._repo(req)
        return {"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid}
                             for b, oid in self.heads[key].items()], "tags": [], "converts": []}

    def _preupload(self, req):
        key = self._repo(req, write=True)
        if req.query.get("create_pr"):
            raise HubError(400, "FakeHub does not implement pull requests (create_pr)")
        _, files = self._at_revision(key, req.args["rev"])
        return {"files": [{"path": f["path"], "uploadMode": "lfs" if is_lfs(f["path"], f["size"]) else "regular",
                           "shouldIgnore": False,
                           "oid": file_oid(f["path"], files[f["path"]]) if f["path"] in files else None}
                          for f in req.json()["files"]]}

    def _lfs_batch(self, req):
        self._repo(req, write=True)
        objects = []
        for obj in req.json()["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if len(self.lfs.get(obj["oid"], b"")) != obj["size"]:  # no actions: already stored
                entry["actions"] = {"upload": {"href": f"{self.url}/_lfs/{obj['oid']}"},
                                    "verify": {"href": f"{self.url}/_lfs/{obj['oid']}/verify"}}
            objects.append(entry)
        return 200, json.dumps({"transfer": "basic", "objects": objects}).encode(), \
            {"Content-Type": "application/vnd.git-lfs+json"}

    def _lfs_upload(self, req):  # no auth, like a presigned URL; the content must match its oid
        if hashlib.sha256(req.body).hexdigest() != req.args["oid"]:
            raise HubError(400, "content does not match its sha256")
        self.lfs[req.args["oid"]] = req.body
        return 200, b"", {"ETag": f'"{hashlib.md5(req.body).hexdigest()}"'}

    def _lfs_verify(self, req):
        body = req.json()
        if len(self.lfs.get(req.args["oid"], b"")) != body.get("size") or body.get("oid") != req.args["oid"]:
            raise HubError(404, "LFS object not found")
        return {"success": True}

    def _commit(self, req):
        key = self._repo(req, write=True)
        if req.query.get("create_pr"):
            raise HubError(400, "FakeHub does not implement pull requests (create_pr)")
        branch = req.args["rev"]
        if branch not in self.heads[key]:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first ndjson line must be the header")
        header, parent = lines[0]["value"], self.heads[key][branch]
        if header.get("parentCommit") not in (None, parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files, added, deleted = dict(self.snapshots[key][parent]), [], []
        for line in lines[1:]:  # build the new tree aside, so a bad line leaves the repo untouched
            kind, value = line["key"], line["value"]
            path = value["path"]
            if kind == "file":
                files[path] = base64.b64decode(value["content"])
            elif kind == "lfsFile":
                if value["oid"] not in self.lfs:
                    raise HubError(422, f"LFS object {value['oid']} of {path} was never uploaded")
                files[path] = self.lfs[value["oid"]]
            elif kind in ("deletedFile", "deletedFolder"):
                folder = path.rstrip("/") + "/"
                gone = [p for p in files if p == path or (kind == "deletedFolder" and p.startswith(folder))]
                if not gone:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                for p in gone:
                    del files[p]
                deleted += gone
                continue
            else:
                raise HubError(400, f"FakeHub does not implement commit lines of kind {kind!r}")
            added.append(path)
        oid = self._new_oid(key, branch, parent, header.get("summary"))
        self.snapshots[key][oid], self.heads[key][branch], self.repos[key][branch] = files, oid, files
        self._commits[key].append(Commit(oid, branch, header.get("summary", ""), header.get("description", ""),
                                         added, deleted, files))
        return {"commitOid": oid, "commitUrl": f"{self._web_url(key)}/commit/{oid}", "success": True,
                "pullRequestUrl": None}

    def _create_branch(self, req):
        key = self._repo(req, write=True)
        branch = req.args["branch"]
        if branch in self.heads[key]:
            raise HubError(409, f"Branch {branch} already exists")
        oid, files = self._at_revision(key, req.json().get("startingPoint") or "main")
        self.heads[key][branch], self.repos[key][branch] = oid, files
        return {}

    def _resolve(self, req):
        key = self._repo(req)
        oid, files = self._at_revision(key, req.args["rev"])
        path = req.args["path"]
        if path not in files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": oid})
        data = files[path]
        headers = {"X-Repo-Commit": oid, "ETag": f'"{git_sha1(data)}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if is_lfs(path, len(data)):  # the client prefers these, as for a file behind the Hub's CDN redirect
            headers.update({"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": str(len(data))})
        start = re.fullmatch(r"bytes=(\d+)-", req.headers.get("range", ""))
        if start:  # resumed download of an .incomplete file
            first = int(start.group(1))
            headers["Content-Range"] = f"bytes {first}-{len(data) - 1}/{len(data)}"
            return 206, data[first:], headers
        return 200, data, headers

    def _web_url(self, key) -> str:
        return f"{self.url}/{URL_PREFIX[key[0]]}{key[1]}"


def _lfs_info(path: str, data: bytes, oid_key: str = "oid") -> dict | None:
    """LFS pointer info; the tree API calls the hash `oid`, repo_info's siblings call it `sha256`."""
    return {oid_key: hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134} \
        if is_lfs(path, len(data)) else None


def _card_data(readme: bytes | None) -> dict | None:
    match = readme and re.match(rb"---\s*\n(.*?)\n---", readme, re.S)
    if not match:
        return None
    import yaml

    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError:  # reachable only by a commit that skipped validate-yaml
        return None
    return meta if isinstance(meta, dict) else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    hub: FakeHub

    def log_message(self, *args) -> None:  # quiet; see hub.log
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # the LFS PUT streams a file object
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        url = urlsplit(self.path)
        body = self._body()
        for methods, regex, name in ROUTES:
            match = regex.fullmatch(url.path)
            if match and self.command in methods:
                args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                req = Request(self.command, name, args, parse_qs(url.query),
                              {k.lower(): v for k, v in self.headers.items()}, body)
                status, payload, headers = self.hub.handle(req)
                break
        else:
            name, status, payload, headers = "unknown", 404, b'{"error": "not implemented by FakeHub"}', {}
        with self.hub._lock:
            self.hub.requests[name] += 1
            self.hub.log.append((self.command, self.path, status))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))  # for HEAD: the size of what GET would send
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve


def point_clients_at(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point huggingface_hub (already imported or not), timm and transformers at ``hub``; undone by monkeypatch."""
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api
    import huggingface_hub.utils._http as hf_http

    home = Path(home)
    env = hub.client_env(home)
    for key, value in env.items():  # for subprocesses, and for code that reads os.environ at call time
        monkeypatch.setenv(key, value)
    for key in ("HUGGINGFACE_CO_STAGING", "HF_OIDC_RESOURCE", "HUGGING_FACE_HUB_TOKEN",
                "HF_HUB_DISABLE_IMPLICIT_TOKEN"):  # each would override the endpoint or the token
        monkeypatch.delenv(key, raising=False)
    # Module constants were computed at import; these are the ones read at call time.
    for key, value in {
        "ENDPOINT": hub.url, "HUGGINGFACE_CO_URL_TEMPLATE": hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"}, "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_XET": True,
        "HF_HOME": env["HF_HOME"], "HF_HUB_CACHE": env["HF_HUB_CACHE"], "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": env["HF_XET_CACHE"], "HF_TOKEN_PATH": env["HF_TOKEN_PATH"],
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"), "AGENT_HARNESSES_PATH": str(home / "agents.json"),
        "HF_HUB_DISABLE_TELEMETRY": True,
    }.items():
        monkeypatch.setattr(constants, key, value)
    # `huggingface_hub.create_repo`, `model_info`, `whoami`... are methods of this instance, built at import.
    monkeypatch.setattr(hf_api.api, "endpoint", hub.url)

    def require_loopback(request) -> None:
        if request.url.host not in LOOPBACK:
            hub.errors.append(f"blocked a request to {request.url}")
            raise RealNetworkError(f"a test tried to reach {request.url}")

    previous = hf_http._GLOBAL_CLIENT_FACTORY

    def guarded_client():
        client = previous()
        client.event_hooks = {**client.event_hooks, "request": [*client.event_hooks["request"], require_loopback]}
        return client

    # The client's retry backoff would make every 503 test take 23 s: record the waits instead.
    monkeypatch.setattr(hf_http, "time", _SkipSleep(hub))
    # Swap the shared client (not close it): monkeypatch puts the caller's session back afterwards.
    monkeypatch.setattr(hf_http, "_GLOBAL_CLIENT_FACTORY", guarded_client)
    monkeypatch.setattr(hf_http, "_GLOBAL_CLIENT", None)


class _SkipSleep:
    """Stands in for the `time` module inside huggingface_hub.utils._http, whose only use is the backoff sleep."""

    def __init__(self, hub: FakeHub):
        self._hub = hub

    def sleep(self, seconds: float) -> None:
        self._hub.client_sleeps.append(seconds)

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def make_fake_hub(monkeypatch, tmp_path):
    """Factory: ``make_fake_hub(token=..., user=..., orgs=...)`` starts a FakeHub and points the clients at it."""
    started: list[FakeHub] = []

    def make(**kwargs) -> FakeHub:
        assert not started, "one FakeHub per test: the clients point at one endpoint"
        hub = FakeHub(**kwargs).start()
        started.append(hub)
        point_clients_at(hub, monkeypatch, tmp_path / "hf_home")
        return hub

    yield make
    if started:
        import huggingface_hub.utils._http as hf_http

        hf_http.close_session()  # the guarded session; monkeypatch then restores the previous one
        started[0].stop()


@pytest.fixture
def fake_hub(make_fake_hub) -> FakeHub:
    """A running FakeHub (token ``hf_test`` of user ``alice``, org ``fastft-org``) the clients point at."""
    return make_fake_hub()
