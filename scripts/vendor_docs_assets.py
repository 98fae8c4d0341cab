"""Fetch the Swagger UI and ReDoc assets that ``/docs`` and ``/redoc`` serve, from the npm registry.

The API documentation pages must work offline (no CDN), so their JavaScript and CSS are committed
under ``kecl/api/static/``. This script is how they got there: each package is pinned by version and
by the registry's sha512 integrity of its tarball, so running it again reproduces the same files
byte for byte, or fails. To upgrade, change a version and its integrity (from
``https://registry.npmjs.org/<name>/<version>``, field ``dist.integrity``) and run::

    python scripts/vendor_docs_assets.py
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).resolve().parents[1] / "kecl" / "api" / "static"
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    licence: str
    integrity: str  # the registry's `dist.integrity` of the tarball
    files: dict[str, str]  # path inside the tarball (under package/) -> file name under static/


PACKAGES = (
    Package(
        name="swagger-ui-dist",
        version="5.35.0",
        licence="Apache-2.0",
        integrity="sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==",
        files={
            "swagger-ui-bundle.js": "swagger-ui-bundle.js",
            "swagger-ui.css": "swagger-ui.css",
            "favicon-32x32.png": "favicon-32x32.png",
            "LICENSE": "swagger-ui-dist.LICENSE",
        },
    ),
    # ReDoc 2: the standalone bundle FastAPI's ReDoc page is written for.
    Package(
        name="redoc",
        version="2.5.4",
        licence="MIT",
        integrity="sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ==",
        files={"bundles/redoc.standalone.js": "redoc.standalone.js", "LICENSE": "redoc.LICENSE"},
    ),
)


def fetch(package: Package) -> dict[str, bytes]:
    """The package's wanted files, from its tarball; raises if the tarball's hash is not the pinned one."""
    url = f"{REGISTRY}/{package.name}/-/{package.name}-{package.version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        data = response.read()
    algorithm, expected = package.integrity.split("-", 1)
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        raise SystemExit(f"{url}: integrity {algorithm}-{actual} is not the pinned {package.integrity}")
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for inner, name in package.files.items():
            member = tar.extractfile(f"package/{inner}")
            if member is None:
                raise SystemExit(f"{url}: no file package/{inner}")
            out[name] = member.read()
    return out


def main() -> None:
    """Write the assets and ``VERSIONS.json`` (name, version, licence, integrity, files) under static/."""
    STATIC.mkdir(parents=True, exist_ok=True)
    manifest = []
    for package in PACKAGES:
        for name, content in fetch(package).items():
            (STATIC / name).write_bytes(content)
        manifest.append(
            {
                "name": package.name,
                "version": package.version,
                "licence": package.licence,
                "integrity": package.integrity,
                "files": sorted(package.files.values()),
            }
        )
        print(f"{package.name} {package.version} ({package.licence}): {', '.join(sorted(package.files.values()))}")
    (STATIC / "VERSIONS.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
