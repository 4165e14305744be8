"""The repository stands on its own: nothing cites a note it does not contain.

Code, comments, docs and data files cite pages of docs/ (``docs/machine.md §4``) or upstream
sources (a xen-api file and function, a kernel header). Two checks over every tracked text file:
no citation of the design notes that live outside the repository, and every ``<page>.md §N``
names a page that exists with a section N.
"""

import io
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THIS = os.path.relpath(os.path.abspath(__file__), ROOT)

# Notes that were never part of the repository (and the folder they were kept in).
FORBIDDEN = (
    (r"\bDESIGN\.md\b|\bDESIGN\s*§", "DESIGN.md"),
    (r"xapi-facts", "xapi-facts.md"),
    (r"\bpeers\.md\b", "peers.md"),
    (r"\blibraries\.md\b", "libraries.md"),
    (r"\bSTYLE\.md\b|\bSTYLE\s*(?:§|#\d)|\(STYLE:", "STYLE.md"),
    (r"hostile-findings|operator-findings|xapi-fidelity-audit", "a findings note"),
    (r"/work/shared|\.\./shared\b|(?<![\w/])reference/[\w.-]+\.md", "the shared notes folder"),
)

# "<page>.md §N" (also "[page.md](page.md) §N" and "§N, §M" runs); the page is group 1.
CITATION = re.compile(r"(?:\[[^\]]*\]\()?([\w./-]+\.md)\)?((?:\s+§[\d.]+,?)+)")
SECTION = re.compile(r"§([\d.]*\d)")
HEADING = re.compile(r"^#+\s+(\d+(?:\.\d+)*)[.\s]", re.M)


def tracked_files():
    """Paths (relative to the root) of every tracked file; a walk when git is not there."""
    try:
        out = subprocess.check_output(["git", "ls-files", "-z"], cwd=ROOT, stderr=subprocess.DEVNULL)
        paths = [p for p in out.decode("utf-8").split("\0") if p]
        if paths:
            return [p for p in paths if os.path.isfile(os.path.join(ROOT, p))]
    except (OSError, subprocess.CalledProcessError):
        pass
    found = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("build", "dist", "__pycache__")]
        found += [os.path.relpath(os.path.join(top, f), ROOT) for f in files]
    return found


def text_of(path):
    """The file's text, or None for a binary file."""
    try:
        with io.open(os.path.join(ROOT, path), encoding="utf-8") as f:
            return f.read()
    except (UnicodeDecodeError, OSError):
        return None


def forbidden_citations(text):
    """[(line number, note)] of every citation of a note outside the repository."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, note in FORBIDDEN:
            if re.search(pattern, line):
                out.append((number, note))
    return out


def dangling_sections(text, citing, exists, sections_of):
    """[(page, section)] cited in ``text`` whose page or section does not exist.

    ``citing`` is the citing file's path; a page resolves against the root, the citing file's
    folder, then docs/. A bare "§N" in a page is its own section; in any other file it names no
    page and is reported with page None.
    """
    flat = re.sub(r"\s+", " ", text)
    covered = set()
    out = []
    for match in CITATION.finditer(flat):
        page = _resolve(match.group(1), citing, exists)
        for sec in SECTION.finditer(match.group(2)):
            covered.add(match.start(2) + sec.start())
            if page is None:
                out.append((match.group(1), sec.group(1)))
            elif sec.group(1) not in sections_of(page):
                out.append((page, sec.group(1)))
    for sec in SECTION.finditer(flat):
        if sec.start() in covered:
            continue
        if not citing.endswith(".md"):
            out.append((None, sec.group(1)))      # in code a bare § names no page
        elif sec.group(1) not in sections_of(citing):
            out.append((citing, sec.group(1)))    # in a page it is one of its own sections
    return out


def _resolve(name, citing, exists):
    for candidate in (name, os.path.join(os.path.dirname(citing), name), os.path.join("docs", name)):
        candidate = os.path.normpath(candidate)
        if exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def files():
    paths = tracked_files()
    return {p: t for p, t in ((p, text_of(p)) for p in paths) if t is not None}


def test_nothing_cites_notes_outside_the_repository(files):
    """No code, comment, doc or data file cites DESIGN.md, xapi-facts, peers.md, libraries.md, ..."""
    found = ["%s:%d cites %s" % (path, number, note)
             for path, text in sorted(files.items()) if path != THIS
             for number, note in forbidden_citations(text)]
    assert not found, "cite docs/ or the upstream source instead:\n" + "\n".join(found)


def test_every_cited_section_exists(files):
    """Each "<page>.md §N" names a page of the repository with a heading numbered N."""
    cache = {}

    def sections_of(page):
        if page not in cache:
            cache[page] = set(HEADING.findall(files.get(page, "")))
        return cache[page]

    found = ["%s cites %s §%s" % (path, page or "no page", section)
             for path, text in sorted(files.items()) if path != THIS
             for page, section in dangling_sections(text, path, files.__contains__, sections_of)]
    assert not found, "\n".join(found)


def test_the_checks_catch_what_they_are_for():
    """Each forbidden note, a missing page, a missing section and a bare § are reported."""
    samples = ["see DESIGN §4", "(xapi-facts §3.5)", "peers.md §1.1", "libraries.md", "(STYLE: x)",
               "STYLE.md #9", "../shared/reference/ovs.md", "/work/shared/x", "hostile-findings"]
    for sample in samples:
        assert forbidden_citations(sample), sample
    assert not forbidden_citations("docs/machine.md §4, upstream ocaml/xapi/xapi_host.ml enable")

    pages = {"docs/machine.md": "# M\n\n## 1. One\n\n### 1.2 Sub\n\n## 4. Four\n"}

    def sections_of(page):
        return set(HEADING.findall(pages.get(page, "")))

    def dangling(text):
        return dangling_sections(text, "agent/x.py", pages.__contains__, sections_of)

    assert dangling("docs/machine.md §4, §1.2 and [machine.md](machine.md) §1") == []
    assert dangling("docs/machine.md\n§4") == []
    assert dangling("docs/machine.md §5") == [("docs/machine.md", "5")]
    assert dangling("docs/gone.md §1") == [("docs/gone.md", "1")]
    assert dangling("as said (§3)") == [(None, "3")]
    assert dangling_sections("see §4, §2", "docs/machine.md", pages.__contains__, sections_of) == [
        ("docs/machine.md", "2")]
