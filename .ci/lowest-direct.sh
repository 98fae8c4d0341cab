#!/usr/bin/env bash
# The unit tests against the lowest versions that pyproject.toml allows for kecl's direct
# dependencies ([project] dependencies and the dev extra; their own dependencies at their newest),
# in a fresh venv under a temporary directory, so that the declared floors stay true.
#
# torch stays a CPU build: the local wheel in KECL_LOCAL_WHEELS (default /opt/wheels) where there
# is one for this Python (then torch's own floor is not exercised), else torch at its floor from
# PyTorch's CPU index.
# Environment: PYTHON (default python3; 3.11 or newer); KECL_LOWEST_KEEP=1 keeps the venv;
# KECL_REQUIRE_POSTGRES and KECL_TEST_POSTGRES_URL reach the tests (.ci/run sets the first).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3}
local_wheels=${KECL_LOCAL_WHEELS:-/opt/wheels}
torch_cpu_index=https://download.pytorch.org/whl/cpu

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

work=$(mktemp -d "${TMPDIR:-/tmp}/kecl-lowest.XXXXXX")
if [ "${KECL_LOWEST_KEEP:-}" = 1 ]; then
  echo "lowest-direct: keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi
start=$SECONDS

"$python" -m venv "$work/venv"
py=$work/venv/bin/python
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "lowest-direct: $python is $("$py" -V 2>&1); kecl needs Python 3.11 or newer" >&2
  exit 2
}
"$py" -m pip install -q --disable-pip-version-check uv
uv=$work/venv/bin/uv
"$uv" --version

# 1. torch alone, without its dependencies: step 2 resolves those (networkx is also one of ours,
#    and must come out at its floor, not at whatever torch's install would have brought).
tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheel=
if [ -d "$local_wheels" ]; then
  wheel=$(find "$local_wheels" -maxdepth 1 -name "torch-*-$tag-$tag-*linux*_$(uname -m).whl" | sort -V | tail -n 1)
fi
find_links=()
if [ -n "$wheel" ]; then
  torch_version=$(basename "$wheel" | cut -d- -f2)
  find_links=(--find-links "$local_wheels")
  echo "lowest-direct: torch $torch_version from $wheel (torch's floor is not exercised)"
  "$uv" pip install -q --python "$py" --no-deps "$wheel"
else
  torch_version=$("$py" - <<'EOF'
import re
import tomllib

with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    m = re.fullmatch(r"torch\s*>=\s*([0-9][0-9.]*)\s*(,.*)?(;.*)?", dep.strip())
    if m:
        print(m.group(1))
        break
else:
    raise SystemExit("pyproject.toml: no torch>=FLOOR in [project] dependencies")
EOF
)
  echo "lowest-direct: torch $torch_version (the floor) from $torch_cpu_index"
  "$uv" pip install -q --python "$py" --no-deps --index-url "$torch_cpu_index" "torch==$torch_version"
  torch_version=$("$py" -c 'from importlib.metadata import version; print(version("torch"))')
fi

# 2. The project with the lowest direct versions; torch held at the build installed above.
echo "torch==$torch_version" >"$work/torch-constraint.txt"
"$uv" pip install -q --python "$py" --resolution lowest-direct "${find_links[@]}" \
  -c "$work/torch-constraint.txt" -e "$root[dev]"

echo "lowest-direct: resolved direct dependencies (the [project] dependencies and the dev extra):"
"$py" - <<'EOF'
import re
from importlib.metadata import PackageNotFoundError, requires, version


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


names = set()
for req in requires("kecl") or []:
    marker = req.partition(";")[2]
    if marker and "extra" in marker and not re.search(r"""extra\s*==\s*["']dev["']""", marker):
        continue
    names.add(norm(re.match(r"[A-Za-z0-9._-]+", req.strip()).group(0)))
for name in sorted(names):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(f"{name}: not installed")
EOF
"$uv" pip check --python "$py"
echo "lowest-direct: installed in $((SECONDS - start)) s"

"$py" -m pytest tests/unit -q -p no:randomly
echo "lowest-direct: done in $((SECONDS - start)) s"
