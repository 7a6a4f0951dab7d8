"""docs/design.md's layout list names every Python file of the package, and only files that exist."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DESIGN = REPO / "docs" / "design.md"
PACKAGE = "fairseq_define"
NOT_LISTED = set()
PATH = re.compile(r"`(" + PACKAGE + r"/[\w/]+\.py)`")


def section(text: str, heading: str) -> str:
    """The body of the `## heading` section of a markdown text, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"docs/design.md has no '## {heading}' section"
    return match.group(1)


def package_files() -> set:
    return {p.relative_to(REPO).as_posix() for p in (REPO / PACKAGE).rglob("*.py")} - NOT_LISTED


def listed_files() -> list:
    return PATH.findall(section(DESIGN.read_text(), "Layout"))


def test_layout_lists_every_package_file():
    missing = sorted(package_files() - set(listed_files()))
    assert not missing, f"docs/design.md#layout does not describe {missing}: add one line for each"


def test_layout_lists_only_existing_files_each_once():
    listed = listed_files()
    unknown = sorted(set(listed) - package_files())
    assert not unknown, f"docs/design.md#layout names {unknown}, which are not files of the package"
    repeated = sorted({p for p in listed if listed.count(p) > 1})
    assert not repeated, f"docs/design.md#layout lists {repeated} more than once"


def test_every_package_path_named_in_design_doc_exists():
    named = set(re.findall(PACKAGE + r"/[\w/]+\.py", DESIGN.read_text()))
    absent = sorted(p for p in named if not (REPO / p).is_file())
    assert not absent, f"docs/design.md names {absent}, which do not exist"
