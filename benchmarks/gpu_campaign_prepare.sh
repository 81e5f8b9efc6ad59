#!/usr/bin/env bash
# Prepare benchmarks/gpu_campaign.py for a GPU machine without network, on a CPU machine with PyPI:
#   1. the wheels the GPU machine lacks (luigi and its needs) into .whl/  (ignored: .git/info/exclude)
#   2. CamVid packed to <= 50 MiB (pipeline.pack_camvid) into .gpu/camvid  (ignored likewise)
#   3. the commit into .gpu/COMMIT (the tree travels without .git)
#   4. checks that what travels -- the working tree, .whl and .gpu -- is <= 64 MiB
#   5. prints the device run command (<= 2000 characters) to issue, with its carry and timeout_s, and
#      writes it to .gpu/command.sh (benchmarks/gpu_campaign_rehearse.sh runs it here first)
#
# Usage: benchmarks/gpu_campaign_prepare.sh [CAMVID_DATA_ROOT]   (default /work/data/camvid)
# Environment: PY (python with this project's packages, default .venv/bin/python), PIP_PY (python whose
# pip downloads, default $PY).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
CAMVID=${1:-/work/data/camvid}
PY=${PY:-.venv/bin/python}
PIP_PY=${PIP_PY:-$PY}
LIMIT=$((64 * 1024 * 1024))
# the GPU machine's Python 3.12 has python-dateutil, six and typing-extensions; these it lacks
WHEELS="luigi==3.8.1 tornado==6.6.1 python-daemon==3.1.2 lockfile==0.12.2 tenacity==9.2.1"

exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
for path in /.whl/ /.gpu/; do
  grep -qxF "$path" "$exclude" 2>/dev/null || echo "$path" >> "$exclude"
done

# 1. wheels: binary ones for CPython 3.12 on manylinux x86-64; a pure-Python sdist is built into a wheel here
mkdir -p .whl
for spec in $WHEELS; do
  name=${spec%%==*}
  if ls .whl/ | grep -qi "^${name//-/_}-${spec##*==}-"; then continue; fi
  "$PIP_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 -d .whl "$spec" \
    || "$PIP_PY" -m pip wheel -q --no-deps -w .whl "$spec"
done
count=$(ls .whl/*.whl | wc -l)
[ "$count" -eq 5 ] || { echo "prepare: expected 5 wheels in .whl, found $count: $(ls .whl)" >&2; exit 1; }

# 2. CamVid, packed once
if [ ! -f .gpu/camvid/CamVid/packed.json ]; then
  rm -rf .gpu/camvid
  mkdir -p .gpu
  PYTHONPATH=$PWD "$PY" -m pipeline.pack_camvid "$CAMVID" .gpu/camvid
fi

# 3. the commit
"$PY" - <<'EOF'
import json, subprocess
run = lambda *a: subprocess.run(a, capture_output=True, text=True, check=True).stdout
status = run("git", "status", "--porcelain", "--untracked-files=no").splitlines()
json.dump({"commit": run("git", "rev-parse", "HEAD").strip(), "dirty_files": len(status)},
          open(".gpu/COMMIT", "w"))
EOF

# 4. what travels: tracked and untracked-not-ignored files, and the carried folders
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -L -c %s 2>/dev/null \
       | awk '{s += $1} END {print s + 0}')
carried=$(find .whl .gpu -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
total=$((tree + carried))
mib() { awk -v b="$1" 'BEGIN {printf "%.2f MiB", b / 1048576}'; }
echo "working tree $(mib "$tree") + wheels and packed CamVid $(mib "$carried") = $(mib "$total") (limit 64 MiB)"
[ "$total" -le "$LIMIT" ] || { echo "prepare: $(mib "$total") would travel, over 64 MiB" >&2; exit 1; }

# 5. the call
cmd='python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; set -o pipefail; nvidia-smi -L; PYTHONUNBUFFERED=1 python3 benchmarks/gpu_campaign.py --data-root .gpu/camvid --out $OUT 2>&1 | tee $OUT/console.log'
[ ${#cmd} -le 2000 ] || { echo "prepare: the command is ${#cmd} characters, over 2000" >&2; exit 1; }
printf '%s\n' "$cmd" > .gpu/command.sh             # what benchmarks/gpu_campaign_rehearse.sh runs, as is
echo "device run call (${#cmd} characters):"
echo "  command:   $cmd"
echo "  carry:     [\".whl\", \".gpu\"]"
echo "  timeout_s: 600"
