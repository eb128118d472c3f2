"""The docs checked against the code, mechanically (no Ray): the README's settings table against
`Settings`, its endpoint table against the routes the app serves, every relative link,
repository path and named function or test written in README.md and docs/*.md against the
repository, the files the code's comments name, and every error code the code sends against the docs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Mount, Route

import core.errors
from core.settings import Settings
from serve_app.app import create_app
from serve_app.model_router import ModelRouter
from serve_app.ops.status import ModelStatus
from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "WS")
# Top-level entries of the repository: a backticked token starting with one of them is a path.
TOP = {p.name for p in ROOT.iterdir() if p.name not in {".git", ".venv", ".tools", "models"}}
CODE_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)


def _section(text: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    ends = [m.start() for m in re.finditer(r"^#{1,%d} " % level, text[start:], re.M)]
    return text[start:start + ends[0]] if ends else text[start:]


def _table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows[1:]  # the header row


# ---- settings ----

def _setting_names() -> dict[str, set[str]]:
    """Each field of Settings: the environment names it is read from."""
    names = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", [alias] if alias else [])
        names[field] = {field.upper(), *(c.upper() for c in choices if isinstance(c, str))}
    return names


def _configuration() -> tuple[list[list[str]], str]:
    section = _section(README.read_text(), "## Configuration")
    table_end = section.index("\n\n", section.index("| variable |"))
    return _table_rows(section[:table_end]), section[table_end:].split("\n### ")[0]


def test_every_setting_in_the_readme_table_is_a_settings_field():
    rows, _ = _configuration()
    known = set().union(*_setting_names().values())
    listed = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row[0])}
    assert len(listed) > 50
    assert listed - known == set(), "in the README's settings table but not in core.settings.Settings"


def test_every_settings_field_is_in_the_readme():
    """In the table (a `PREFIX_*` row: each such field in the guide that row links to), or, for the
    values the deploy scripts write under `args`, named in the paragraph after it."""
    rows, after = _configuration()
    listed = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row[0])}
    wildcards = {}
    for row in rows:
        for prefix in re.findall(r"`([A-Z][A-Z0-9_]*)\*`", row[0]):
            guide = re.search(r"\]\((docs/[\w.-]+\.md)", row[2])
            assert guide, f"the {prefix}* row links to the guide that lists those settings"
            wildcards[prefix] = (ROOT / guide.group(1)).read_text()
    missing = []
    for field, names in _setting_names().items():
        if names & listed or f"`{field}`" in after:
            continue
        prefix = next((p for p in wildcards if any(n.startswith(p) for n in names)), None)
        if prefix and any(f"`{n}`" in wildcards[prefix] for n in names):
            continue
        missing.append(field)
    assert missing == [], "Settings fields the README does not list"


# ---- endpoints ----

def _served() -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, path parameters written `{}`."""
    app = create_app(Settings(), ModelRouter({}, "default"), None, ModelStatus(None, {}))
    served = set()

    def walk(routes, prefix=""):
        for route in routes:
            router = getattr(route, "original_router", None)
            if router is not None:
                walk(router.routes, prefix)
                continue
            path = re.sub(r"\{[^}]+\}", "{}", prefix + route.path)
            if isinstance(route, APIWebSocketRoute):
                served.add(("WS", path))
            elif isinstance(route, Mount):
                served.add(("GET", path + "/{}"))
            elif isinstance(route, (APIRoute, Route)):
                served.update((m, path) for m in route.methods if m != "HEAD")

    walk(app.routes)
    return served


def _documented_endpoints() -> set[tuple[str, str]]:
    """The README's endpoint table: `GET /path`, `GET`/`DELETE /path`, and `POST .../x` (the
    previous path's start) in the first column."""
    documented = set()
    for row in _table_rows(_section(README.read_text(), "### Endpoints")):
        pending: list[str] = []
        previous = ""
        for token in re.findall(r"`([^`]+)`", row[0]):
            if token in METHODS:
                pending.append(token)
                continue
            method, _, path = token.partition(" ")
            assert method in METHODS and path, f"not a method and path: {token!r} in {row[0]!r}"
            if path.startswith("..."):
                rest = path[3:]
                first = rest.split("/")[1]
                path = previous[:previous.index("/" + first)] + rest
            previous = path
            for m in pending + [method]:
                documented.add((m, re.sub(r"\{[^}]+\}", "{}", path)))
            pending = []
        assert not pending, f"a method without a path in {row[0]!r}"
    return documented


def test_every_route_is_in_the_readme_endpoint_table_and_the_reverse():
    served, documented = _served(), _documented_endpoints()
    # FastAPI's helper page of the Swagger UI at /docs, not an endpoint of its own.
    served.discard(("GET", "/docs/oauth2-redirect"))
    assert len(served) >= 35
    assert served - documented == set(), "served but not in the README's endpoint table"
    assert documented - served == set(), "in the README's endpoint table but not served"


# ---- links and paths ----

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"`|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = CODE_BLOCK.sub("", path.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def _prose(path: Path) -> str:
    return CODE_BLOCK.sub("", path.read_text())


def _links(path: Path) -> list[str]:
    """Markdown link targets outside code (a link written inside backticks is an example)."""
    return re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`\n]*`", "", _prose(path)))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings_that_exist(doc):
    broken = []
    for target in _links(doc):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (doc.parent / file).resolve() if file else doc
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    assert broken == []


def _backticked_paths(doc: Path) -> set[str]:
    """Backticked tokens that name a repository path: they start with a top-level entry of the
    repository (`serve_app/...`, `docs/x.md`, `models.json`) and are not a pattern or a URL."""
    paths = set()
    for token in re.findall(r"`([^`\s]+)`", _prose(doc)):
        token = token.rstrip(",.:;)")
        if any(c in token for c in "<>*{}$|=") or "://" in token:
            continue
        token = token.split("#")[0]
        if token.split("/")[0] in TOP and (token != token.split("/")[0] or "." in token):
            paths.add(token)
    return paths


def _exists(path: str) -> bool:
    """A path, or a test's pytest id (`tests/x.py::test_name`): the file, and the test in it."""
    file, _, name = path.partition("::")
    if not (ROOT / file).exists():
        return False
    return not name or re.search(rf"^\s*(async def|def|class) {re.escape(name)}\b", (ROOT / file).read_text(), re.M)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_backticked_repository_paths_exist(doc):
    assert [p for p in _backticked_paths(doc) if not _exists(p)] == []


def test_the_path_check_sees_paths():
    assert {"serve_app/builder.py", "models.json", "scripts/serve.sh"} <= _backticked_paths(README)


def _defines(file: Path, name: str) -> bool:
    return bool(re.search(rf"^\s*(async def|def|class) {re.escape(name)}\b|^{re.escape(name)}\b", file.read_text(), re.M))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_functions_and_tests_are_in_the_file_named(doc):
    """`file.py: name`, `file.py::name` (a path, or a bare test file name: one of the tests of that
    name in the repository): the file defines `name`. Paths outside the repository (Ray's) are left out."""
    ours = [p for p in ROOT.rglob("*.py") if p.relative_to(ROOT).parts[0] in TOP]
    missing = []
    for file, name in re.findall(r"`([\w./-]+\.py)(?:::|: )(\w+)", _prose(doc)):
        if "/" in file and file.split("/")[0] not in TOP:
            continue
        candidates = [ROOT / file] if "/" in file else [p for p in ours if p.name == file]
        if not any(c.exists() and _defines(c, name) for c in candidates):
            missing.append(f"{file}: {name}")
    assert missing == []


_REPO_PATH_IN_CODE = re.compile(r"(?<![\w./-])((?:serve_app|core|deployments|scripts|tests|docs|configs|examples)"
                                r"/[\w./-]*\.(?:py|md|sh|json|yml|yaml|html|js|css))\b")


def test_comments_and_docstrings_name_files_that_exist():
    """A repository file named in the code of serve_app/, core/ and deployments/ (a comment, a
    docstring, a message) exists: a file that moved is named where it went."""
    stale = []
    for package in ("serve_app", "core", "deployments"):
        for source in (ROOT / package).rglob("*.py"):
            for path in set(_REPO_PATH_IN_CODE.findall(source.read_text())):
                if not (ROOT / path.split("::")[0]).exists():
                    stale.append(f"{source.relative_to(ROOT)}: {path}")
    assert stale == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_doc_cites_a_file_outside_the_repository(doc):
    """A Markdown file named anywhere in a doc is in the repository; nothing climbs out of it."""
    text = doc.read_text()
    named = set(re.findall(r"(?<![\w/.-])([\w./-]*[\w-]\.md)\b", text))
    outside = [n for n in named if not any((base / n).exists() for base in (ROOT, doc.parent, ROOT / "docs"))]
    climbing = [m for m in re.findall(r"(?<![.\w])(?:\.\./)+[\w.-]*", text)
                if not (doc.parent / m).resolve().is_relative_to(ROOT)]
    assert outside == [] and climbing == []


# ---- error codes ----

def test_every_error_code_is_in_the_error_guide():
    text = (ROOT / "docs" / "errors.md").read_text()
    codes = {c.code for _, c in inspect.getmembers(core.errors, inspect.isclass)
             if issubclass(c, core.errors.AICoreError) and c.code}
    assert len(codes) > 20
    assert sorted(c for c in codes if f"`{c}`" not in text) == []


def test_every_error_code_the_code_sends_is_documented():
    """Codes given where an error is raised (`code="..."`), and those Ray's proxy answers with
    (`serve_app/http/proxy_http.py`), are named in the error guide or, for WebSocket-only codes,
    in the guides that describe the socket."""
    sent = set()
    for package in ("serve_app", "core", "deployments"):
        for source in (ROOT / package).rglob("*.py"):
            text = source.read_text()
            sent |= set(re.findall(r"\bcode=\"([a-z_]+)\"", text))
            sent |= set(re.findall(r"_answer\(\d+, \"[^\"]*\", \"([a-z_]+)\"", text))
    assert {"invalid_value", "headers_too_large", "too_many_items"} <= sent  # the scan sees them
    docs = "".join(p.read_text() for p in DOCS)
    assert sorted(c for c in sent if f"`{c}`" not in docs) == []
