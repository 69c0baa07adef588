#!/usr/bin/env python3
"""Link check of the repository's Markdown (Python 3.11, standard library only).

For every git-tracked `.md` file, each relative link must point to a git-tracked file or
directory inside this repository (so it works in a fresh clone), and a `#anchor` must name a
heading (or an explicit `<a id>`/`<a name>`) of the Markdown file it points to. Links that
leave the repository (`../shared/…` included) are errors. Absolute URLs (`https:`, `mailto:`)
are not fetched. Any mention of `../shared/` in a Markdown file, code blocks included, is an
error too: a fresh clone has no such folder.

    python3 .ci/links.py           # exit 0, or one `file:line: message` per broken link, exit 1

Links inside fenced code blocks and inline code spans are ignored; inline links, images,
reference definitions (`[name]: target`) and HTML `href`/`src` attributes are checked.
"""
from __future__ import annotations

import posixpath
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"""<a\s+[^>]*\b(?:id|name)\s*=\s*["']([^"']+)["']""")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def tracked() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    return [p for p in out.split("\0") if p]


def lines_outside_code(text: str):
    """(line number, raw line, line with inline code spans blanked) for lines outside fenced
    code blocks."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            mark = m.group(1)
            if fence is None:
                fence = mark[0] * len(mark)
                continue
            if mark.startswith(fence):
                fence = None
                continue
        if fence is not None:
            continue
        yield n, line, CODE_SPAN.sub(lambda s: " " * len(s.group(0)), line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    text = path.read_text(encoding="utf-8")
    for _, raw, line in lines_outside_code(text):
        m = HEADING.match(raw)
        if m:
            base = slug(m.group(2))
            k = seen.get(base, 0)
            seen[base] = k + 1
            out.add(base if k == 0 else f"{base}-{k}")
        for a in HTML_ANCHOR.findall(line):
            out.add(a)
    return out


def main() -> int:
    files = tracked()
    present = set(files)
    dirs = {posixpath.dirname(f) for f in files}
    for d in list(dirs):
        while d:
            d = posixpath.dirname(d)
            dirs.add(d)
    cache: dict[str, set[str]] = {}
    errors: list[str] = []
    checked = 0
    for md in sorted(f for f in files if f.endswith(".md")):
        src = ROOT / md
        if not src.is_file():
            continue  # deleted in the work tree but still in the index
        text = src.read_text(encoding="utf-8")
        # A path into the shared folder beside the work tree, even in a code block, is
        # something a fresh clone cannot follow.
        for n, line in enumerate(text.splitlines(), 1):
            if "../shared/" in line or "shared/CONTRACT.md" in line:
                errors.append(f"{md}:{n}: names a path outside the repository (../shared): {line.strip()[:80]}")
        for n, _, line in lines_outside_code(text):
            targets = [m.group(1) for m in INLINE.finditer(line)]
            targets += HTML.findall(line)
            m = REFDEF.match(line)
            if m:
                targets.append(m.group(1))
            for target in targets:
                if not target or SCHEME.match(target) or target.startswith("//"):
                    continue
                checked += 1
                where = f"{md}:{n}"
                path_part, _, frag = target.partition("#")
                path_part = unquote(path_part.split("?", 1)[0])
                if path_part.startswith("/"):
                    errors.append(f"{where}: {target}: absolute path; use a path relative to {md}")
                    continue
                if path_part:
                    joined = posixpath.normpath(posixpath.join(posixpath.dirname(md), path_part))
                else:
                    joined = md
                if joined == ".." or joined.startswith("../"):
                    errors.append(f"{where}: {target}: leaves the repository (a fresh clone has no {joined})")
                    continue
                if joined == ".":
                    joined = ""
                if joined not in present and joined not in dirs:
                    hint = " (exists, but is not tracked by git)" if (ROOT / joined).exists() else ""
                    errors.append(f"{where}: {target}: no such file in the repository{hint}")
                    continue
                if frag and joined.endswith(".md") and joined in present:
                    if joined not in cache:
                        cache[joined] = anchors(ROOT / joined)
                    if unquote(frag) not in cache[joined]:
                        errors.append(f"{where}: {target}: {joined} has no heading with anchor #{frag}")
    for e in errors:
        print(e)
    md_count = sum(1 for f in files if f.endswith(".md"))
    status = "FAILED" if errors else "ok"
    print(f"links: {checked} relative links in {md_count} Markdown files checked, "
          f"{len(errors)} broken: {status}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
