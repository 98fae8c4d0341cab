#!/usr/bin/env python3
"""Fetch the web interface's third-party JavaScript and CSS from the npm registry, reproducibly.

Each package is pinned to a version and to the registry's sha512 integrity of its tarball; the
script refuses a tarball whose hash differs. It copies the files the pages load and the package's
licence into ``kecl/web/static/vendor/`` and writes ``VERSIONS.txt`` there. Run it to upgrade
(change a pin, run, commit the result); the server itself never fetches anything.

    python scripts/vendor-web-assets.py [--registry https://registry.npmjs.org]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import tarfile
import urllib.request
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "kecl" / "web" / "static" / "vendor"

# name, version, sha512 integrity (from the registry's ``dist.integrity``), {file in the tarball: file here}
PACKAGES = [
    (
        "cytoscape",
        "3.35.0",
        "sha512-sMvBIXiGMnhkCaWz2R06FwF/27MNlS+Tqvi17foO9UhnUg3XGZccKjxsvEqQFAQYMSSZmN5SxYzUYlQ0DOJJ3g==",
        {"package/dist/cytoscape.min.js": "cytoscape.min.js", "package/LICENSE": "cytoscape.LICENSE.txt"},
    ),
    (
        "uplot",
        "1.6.32",
        "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==",
        {
            "package/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
            "package/dist/uPlot.min.css": "uPlot.min.css",
            "package/LICENSE": "uplot.LICENSE.txt",
        },
    ),
]


def fetch(registry: str, name: str, version: str, integrity: str) -> bytes:
    """The package's tarball, checked against its pinned integrity; raises ValueError on a mismatch."""
    url = f"{registry.rstrip('/')}/{name}/-/{name}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        data: bytes = response.read()
    algo, _, expected = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if actual != expected:
        raise ValueError(f"{url}: {algo} is {actual}, pinned {expected}")
    return data


def main() -> None:
    """Fetch every pinned package and write its files, licence and ``VERSIONS.txt``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default="https://registry.npmjs.org")
    args = parser.parse_args()
    VENDOR.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, version, integrity, files in PACKAGES:
        data = fetch(args.registry, name, version, integrity)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member, target in files.items():
                extracted = tar.extractfile(member)
                if extracted is None:
                    raise ValueError(f"{name}@{version}: {member} is not a file")
                (VENDOR / target).write_bytes(extracted.read())
        lines.append(f"{name} {version} {integrity} -> {', '.join(files.values())}")
        print(lines[-1])
    (VENDOR / "VERSIONS.txt").write_text(
        "Vendored by scripts/vendor-web-assets.py from the npm registry (name version integrity -> files).\n"
        + "\n".join(lines)
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
