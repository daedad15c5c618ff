"""MkDocs hooks for the synthcl site.

- Benchmark pages include benchmarks/results/*.md verbatim (pymdownx.snippets); the PNG files next to
  them are published under benchmarks/ so that the included image links resolve.
- ``<!-- optional-figure PATH "CAPTION" -->`` in a page becomes the image when docs/PATH exists, and a
  note naming the script that makes it otherwise, so a figure not yet generated never breaks the build.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
FIGURE = re.compile(r'<!--\s*optional-figure\s+(\S+)\s+"([^"]*)"\s+"([^"]*)"\s*-->')


def on_files(files, config):
    for image in sorted(RESULTS.glob("*.png")):
        uri = f"benchmarks/{image.name}"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(image)))
    return files


def on_page_markdown(markdown, page, config, files):
    def replace(match: re.Match) -> str:
        target, caption, how = match.groups()
        if (Path(config["docs_dir"]) / target).is_file():
            link = posixpath.relpath(target, posixpath.dirname(page.file.src_uri) or ".")
            return f"![{caption}]({link})"
        return f'!!! note "Figure to come: {caption}"\n    `docs/{target}` is made by `{how}`.\n'

    return FIGURE.sub(replace, markdown)
