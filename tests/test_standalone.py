"""A clone of the repository stands alone: no file points at the authors' private notes.

Docs and comments cite papers and public repositories (docs/conventions.md, "References"),
never the notes that lived next to the repository (``../shared``: the reference "facts" files
with their section numbers, the style notes). A user's clone has none of them.
"""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THIS_FILE = os.path.relpath(os.path.abspath(__file__), ROOT).replace(os.sep, "/")

# Each pattern is a way the private notes were pointed at.
PRIVATE_NOTE_PATTERNS = (
    re.compile(r"\.\./shared\b"),  # the notes directory next to the repository
    re.compile(r"facts\s*§", re.IGNORECASE),  # "facts §4.1", "Facts §9.1"
    re.compile(r"\b(?:fid|attngan_dmgan)_facts\b"),  # the two reference facts files
    re.compile(r"\buser_needs\b"),
    re.compile(r"\bsmall_scale_pilots\b"),
    re.compile(r"\bSTYLE\.md\b"),  # the private style notes (summarised in docs/conventions.md)
)


def _repo_files():
    """Tracked files plus new, not-ignored ones (relative paths), or None outside a git clone."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sorted({p for p in out.decode("utf-8").split("\0") if p})


def find_private_references(root, paths):
    """Returns ``"path:line: text"`` for every line of the text files in ``paths`` that matches."""
    hits = []
    for rel in paths:
        try:
            with open(os.path.join(root, rel), "rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError):  # deleted in the work tree, submodule
            continue
        if b"\0" in data:  # binary (fixtures, weights)
            continue
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if any(p.search(line) for p in PRIVATE_NOTE_PATTERNS):
                hits.append(f"{rel}:{number}: {line.strip()}")
    return hits


def test_no_file_points_at_the_private_notes():
    paths = _repo_files()
    if paths is None:
        pytest.skip("not a git clone: no file list")
    assert THIS_FILE in paths
    hits = find_private_references(ROOT, [p for p in paths if p != THIS_FILE])
    assert not hits, (
        "these lines point at notes a clone does not have; cite the paper or the public "
        "repository (path:function and commit, docs/conventions.md 'References') instead:\n"
        + "\n".join(hits))


def test_the_scan_reports_file_and_line(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "clean line\nsee ../shared/reference/fid_facts.md\nok\n(Facts §9.1) counts\n")
    (tmp_path / "b.py").write_text('"""UpBlock (MinfengZhu/DM-GAN code/model.py:upBlock)."""\n')
    (tmp_path / "w.bin").write_bytes(b"\0facts \xc2\xa74.1")  # binary: never read as text
    hits = find_private_references(str(tmp_path), ["docs/a.md", "b.py", "w.bin", "gone.md"])
    assert [h.split(": ", 1)[0] for h in hits] == ["docs/a.md:2", "docs/a.md:4"]
    assert hits[1].endswith("(Facts §9.1) counts")
