"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, for tests only.

It answers what `huggingface_hub` and transformers use to publish and load a model repository, and what `datasets`
uses to load a dataset repository (`load_dataset(ID, CONFIG)` of parquet files, a README's `configs`): create repo,
preupload (every file in the regular upload mode), NDJSON commit (to a branch, or with `create_pr=1` to a new pull
request's `refs/pr/N`), branches (`create_branch`, at the main branch's commit), pull requests opened before their
commits (`discussions`, and their details), model-card
YAML validation, revision info, tree
listing (a folder's children, or with `recursive=true` everything below it; a folder that does not exist answers
404), and HEAD/GET resolve with `ETag`, `X-Repo-Commit` and `Content-Length`. Unknown routes answer 404. A dataset
repository is held under `datasets/<id>`, the path of its files' URLs (`/datasets/<id>/resolve/...`); its API routes
(`/api/datasets/<id>/...`) are answered as a model's of that name.
Repositories live in memory. Faults can be injected: `fail_commits` answers commits with HTTP 500, `drop_commits`
closes the connection mid-upload.
"""

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


def git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubState:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo_id -> {"private", "commits": {sha: files}, "branches": {name: sha}}
        self.fail_commits = 0
        self.drop_commits = 0
        self.commit_requests = 0
        self.commit_tokens: list[str | None] = []  # the bearer token of every commit request, in order
        self.read_tokens: list[str | None] = []  # and of every GET / HEAD request
        self.read_paths: list[str] = []  # each one's path
        self.lock = threading.Lock()

    def files_at(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None
        sha = repo["branches"].get(revision, revision)
        if sha not in repo["commits"]:
            return None
        return sha, repo["commits"][sha]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass made per server

    def log_message(self, *args):  # keep test output quiet
        pass

    # ---------------------------------------------------------------------------------------------- helpers
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict | None = None):
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _not_found(self, code: str = "EntryNotFound", head: bool = False):
        self._send(
            404, b'{"error": "not found"}', {"X-Error-Code": code, "Content-Type": "application/json"}, head=head
        )

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    # ---------------------------------------------------------------------------------------------- routes
    def do_POST(self):  # noqa: N802
        path = _as_model_route(unquote(urlparse(self.path).path))
        if path == "/api/repos/create":
            payload = json.loads(self._body() or b"{}")
            repo_id = "/".join(p for p in (payload.get("organization"), payload["name"]) if p)
            repo_id = f"datasets/{repo_id}" if payload.get("type") == "dataset" else repo_id
            first = hashlib.sha1(repo_id.encode()).hexdigest()  # the empty first commit (`datasets` reads its id)
            with self.state.lock:
                if repo_id in self.state.repos:
                    return self._json(409, {"error": "You already created this model repo", "url": repo_id})
                self.state.repos[repo_id] = {
                    # huggingface_hub 1.x sends `private`; 2.x sends `visibility` ("public" / "private")
                    "private": bool(payload.get("private")) or payload.get("visibility") == "private",
                    "commits": {first: {}},
                    "branches": {"main": first},
                }
            return self._json(200, {"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":  # model-card metadata check made before a README.md is committed
            payload = json.loads(self._body() or b"{}")
            ok = isinstance(payload.get("content"), str)
            return self._json(200 if ok else 400, {"errors": [] if ok else ["no content"], "warnings": []})
        match = re.fullmatch(r"/api/models/(.+)/discussions", path)
        if match:  # a pull request opened before its commits (huggingface_hub's pipelined upload with create_pr)
            payload = json.loads(self._body() or b"{}")
            number = self._open_pull_request(match.group(1), payload.get("title", ""))
            if number is None:
                return self._not_found("RepoNotFound")
            return self._json(200, {"num": number, "url": f"http://{self.headers['Host']}/{match.group(1)}"})
        match = re.fullmatch(r"/api/models/(.+)/branch/(.+)", path)
        if match:  # `create_branch`: a branch at the main branch's commit
            self._body()
            repo_id, branch = match.groups()
            with self.state.lock:
                repo = self.state.repos.get(repo_id)
                if repo is None:
                    return self._not_found("RepoNotFound")
                if branch in repo["branches"]:
                    return self._json(409, {"error": "Reference already exists"})
                repo["branches"][branch] = repo["branches"]["main"]
            return self._json(200, {})
        match = re.fullmatch(r"/api/models/(.+)/(preupload|commit)/(.+)", path)
        if not match:
            self._body()
            return self._not_found("RepoNotFound")
        repo_id, action, revision = match.groups()
        if action == "preupload":
            payload = json.loads(self._body())
            found = self.state.files_at(repo_id, revision)
            if found is None:
                return self._not_found("RepoNotFound")
            files = found[1]
            answer = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    **({"oid": git_blob_sha(files[f["path"]])} if f["path"] in files else {}),
                }
                for f in payload["files"]
            ]
            return self._json(200, {"files": answer})
        return self._commit(repo_id, revision, "create_pr=1" in urlparse(self.path).query)

    def _open_pull_request(self, repo_id: str, title: str) -> int | None:
        """A new pull request against main: its ref `refs/pr/N` starts at main's commit; returns N."""
        with self.state.lock:
            repo = self.state.repos.get(repo_id)
            if repo is None:
                return None
            number = len(repo.setdefault("pull_requests", {})) + 1
            repo["pull_requests"][number] = title
            repo["branches"][f"refs/pr/{number}"] = repo["branches"]["main"]
            return number

    def _commit(self, repo_id: str, revision: str, create_pr: bool = False):
        with self.state.lock:
            self.state.commit_requests += 1
            auth = self.headers.get("Authorization") or ""
            self.state.commit_tokens.append(auth.removeprefix("Bearer ") or None)
            drop, fail = self.state.drop_commits > 0, self.state.fail_commits > 0
            self.state.drop_commits -= drop
            self.state.fail_commits -= fail and not drop
        if drop:  # read part of the upload, then hang up without an answer
            self.rfile.read(min(64, int(self.headers.get("Content-Length", 0))))
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        body = self._body()
        if fail:
            return self._json(500, {"error": "Internal Error (injected by the test server)"})
        found = self.state.files_at(repo_id, revision)
        if found is None:
            return self._not_found("RepoNotFound")
        parent, files = found
        files = dict(files)
        summary = ""
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                summary = value.get("summary", "")
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                files = {p: c for p, c in files.items() if p != value["path"] and not p.startswith(value["path"])}
            else:
                return self._json(400, {"error": f"unsupported commit item {item['key']}"})
        sha = hashlib.sha1(f"{parent}{summary}{time.time_ns()}{sorted(files)}".encode()).hexdigest()
        host = self.headers["Host"]
        answer = {"commitOid": sha, "commitUrl": f"http://{host}/{repo_id}/commit/{sha}"}
        if create_pr:  # a pull request opened with its commit (the single-commit upload): a new `refs/pr/N`
            number = self._open_pull_request(repo_id, summary)
            revision = f"refs/pr/{number}"
            answer["pullRequestUrl"] = f"http://{host}/{repo_id}/discussions/{number}"
        with self.state.lock:
            repo = self.state.repos[repo_id]
            repo["commits"][sha] = files
            repo["branches"][revision if revision in repo["branches"] else "main"] = sha
        return self._json(200, answer)

    def do_HEAD(self):  # noqa: N802
        self._get(head=True)

    def do_GET(self):  # noqa: N802
        self._get(head=False)

    def _get(self, head: bool):
        # a revision comes quoted whole (refs%2Fpr%2F1) where a path follows it
        raw = _as_model_route(urlparse(self.path).path)
        path = unquote(raw)
        auth = self.headers.get("Authorization") or ""
        with self.state.lock:
            self.state.read_tokens.append(auth.removeprefix("Bearer ") or None)
            self.state.read_paths.append(path)
        match = re.fullmatch(r"/api/models/(.+)/discussions/(\d+)", path)
        if match:
            repo_id, number = match.group(1), int(match.group(2))
            title = self.state.repos.get(repo_id, {}).get("pull_requests", {}).get(number)
            if title is None:
                return self._not_found("RepoNotFound", head)
            details = {
                "num": number, "title": title, "status": "open", "isPullRequest": True, "events": [],
                "author": {"name": "user"}, "createdAt": "2026-01-01T00:00:00.000Z",
                "repo": {"name": repo_id, "type": "model"}, "changes": {"base": "refs/heads/main"},
                "filesWithConflicts": [],
            }  # fmt: skip
            return self._json(200, details)
        match = re.fullmatch(r"/api/models/(.+?)(?:/revision/(.+))?", path)
        if match and not path.endswith("/tree") and "/tree/" not in path:
            repo_id, revision = match.group(1), match.group(2) or "main"
            found = self.state.files_at(repo_id, revision)
            if found is None:
                return self._not_found("RepoNotFound" if repo_id not in self.state.repos else "RevisionNotFound", head)
            sha, files = found
            return self._json(
                200,
                {
                    "id": repo_id.removeprefix("datasets/"),  # a dataset's id as the Hub gives it
                    "modelId": repo_id,
                    "sha": sha,
                    "private": self.state.repos[repo_id]["private"],
                    "siblings": [{"rfilename": p} for p in sorted(files)],
                },
            )
        match = re.fullmatch(r"/api/models/(.+)/tree/([^/]+)(?:/(.*))?", raw)
        if match:
            repo_id, revision, prefix = (unquote(group or "") for group in match.groups())
            found = self.state.files_at(repo_id, revision)
            if found is None:
                return self._not_found("RepoNotFound", head)
            recursive = parse_qs(urlparse(self.path).query).get("recursive", ["false"])[0].lower() == "true"
            entries = _tree(found[1], prefix.strip("/"), recursive)
            if prefix.strip("/") and not entries:  # no such folder, as the Hub answers
                return self._not_found("EntryNotFound", head)
            return self._json(200, entries)
        match = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", raw)
        if match:
            repo_id, revision, filename = (unquote(group) for group in match.groups())
            found = self.state.files_at(repo_id, revision)
            if found is None:
                return self._not_found("RepoNotFound" if repo_id not in self.state.repos else "RevisionNotFound", head)
            sha, files = found
            if filename not in files:
                return self._not_found("EntryNotFound", head)
            content = files[filename]
            headers = {
                "ETag": f'"{git_blob_sha(content)}"',
                "X-Repo-Commit": sha,
                "Content-Length": str(len(content)),
                "Content-Type": "application/octet-stream",
            }
            return self._send(200, content, headers, head=head)
        return self._not_found("RepoNotFound", head)


def _as_model_route(path: str) -> str:
    """A dataset repository's API route as the route of the model repository `datasets/<id>` that holds it."""
    return path.replace("/api/datasets/", "/api/models/datasets/", 1) if path.startswith("/api/datasets/") else path


def _tree(files: dict, folder: str, recursive: bool) -> list:
    """The tree listing of `folder` ("" the root): its files and folders, or with `recursive` everything below it."""
    start = f"{folder}/" if folder else ""
    entries = {}
    for path, content in sorted(files.items()):
        if not path.startswith(start):
            continue
        parts = path[len(start) :].split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):  # the folders on the way
            name = start + "/".join(parts[:depth])
            entries.setdefault(name, {"type": "directory", "path": name, "oid": git_blob_sha(name.encode())})
        if recursive or len(parts) == 1:
            entries[path] = {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha(content)}
    return list(entries.values())


class LocalHub:
    """Starts the server on a free port of 127.0.0.1 in a daemon thread; `endpoint` is its URL."""

    def __init__(self):
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
