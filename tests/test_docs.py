"""The README stays a short front page and the docs site keeps every fact a user looks up:
every plugin fixture, every mooncake_perf key, every page in the site's navigation."""

from __future__ import annotations

import re

import pytest
import yaml

from pytest_mooncake.config.markers import PERF_KEYS

from .conftest import REPO

DOCS = REPO / "docs"
README_MAX_LINES = 150


def _nav_pages(nav: list) -> list[str]:
    pages = []
    for entry in nav:
        value = entry if isinstance(entry, str) else next(iter(entry.values()))
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_readme_is_a_short_front_page() -> None:
    lines = (REPO / "README.md").read_text("utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move the detail into docs/"
    text = "\n".join(lines)
    for heading in ("## Install", "## Quick starts", "## What an attach run does to your cluster", "## Documentation"):
        assert heading in text


def test_the_readme_installs_from_a_checkout_or_a_wheel_with_the_suites_extra() -> None:
    text = (REPO / "README.md").read_text("utf-8")
    assert "pip install -e '.[mooncake,suites]'" in text
    assert 'pip install "$(ls dist/pytest_mooncake-*.whl)[mooncake,suites]"' in text
    # The package is on no index: a bare name would fetch nothing, or someone else's package.
    assert not re.search(r"pip install '?pytest-mooncake", text)
    assert "pytest --pyargs pytest_mooncake.suites" in text and "--mooncake-doctor" in text


def test_every_readme_and_docs_link_resolves() -> None:
    # mkdocs build --strict checks the site's links; the README's are read on GitHub.
    readme = (REPO / "README.md").read_text("utf-8")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert targets
    missing = [target for target in targets if not target.startswith("http") and not (REPO / target).exists()]
    assert missing == []


def test_every_docs_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text("utf-8"))
    assert config["theme"]["name"] == "material" and config["theme"]["font"] is False
    in_nav = set(_nav_pages(config["nav"]))
    on_disk = {str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md")}
    assert on_disk == in_nav


def test_every_plugin_fixture_is_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures", "-p", "no:cacheprovider")
    names = set(re.findall(r"^((?:mooncake|openai|baseline)_\w+)(?: \[\w+ scope\])? -- ", result.stdout.str(), re.M))
    assert {"mooncake_master", "openai_endpoint", "baseline_endpoint", "mooncake_deployment", "mooncake_kv_pool"} <= names
    page = (DOCS / "authors" / "fixtures.md").read_text("utf-8")
    undocumented = sorted(name for name in names if f"`{name}`" not in page)
    assert undocumented == [], "add these fixtures to docs/authors/fixtures.md"


def test_every_mooncake_perf_key_is_documented() -> None:
    page = (DOCS / "authors" / "markers.md").read_text("utf-8")
    rows = set(re.findall(r"^\| `(\w+)` \|", page, re.M))
    assert set(PERF_KEYS) <= rows, f"add to docs/authors/markers.md: {sorted(set(PERF_KEYS) - rows)}"


def test_the_readmes_operating_characteristic_is_the_benchmarks() -> None:
    """README shows rows of benchmarks/results/operating_characteristic.md: each must be one of its
    lines as the benchmark wrote them, never a figure typed in by hand."""
    readme = (REPO / "README.md").read_text("utf-8")
    section = readme[readme.index("## How a verdict decides"):readme.index("## What an attach run does")]
    rows = [line for line in section.splitlines() if re.match(r"^\| \d", line)]
    written = set((REPO / "benchmarks" / "results" / "operating_characteristic.md").read_text("utf-8").splitlines())
    assert len(rows) >= 6 and not [row for row in rows if row not in written]
