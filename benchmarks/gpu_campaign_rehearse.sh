#!/usr/bin/env bash
# Rehearse the one device call here, on the CPU, as the GPU machine will run it:
#   - the GPU machine's Python (3.12), torch (2.11.0) and numpy (2.5.2), in a venv of their own;
#   - only what travels -- the working tree without .git, .whl and .gpu -- copied to a fresh folder;
#   - the very command gpu_campaign_prepare.sh wrote to .gpu/command.sh, with two changes only:
#     `--smoke` (no CUDA here: the tiny backbone and a tiny budget, same code) and no `nvidia-smi -L`;
#   - then every section of results.json must say ok.
# It catches what the CPU venv cannot: a newer-Python or older-torch/numpy API, a wheel that does not
# install with --target, a module the GPU machine lacks, a path that needs .git.
#
# Usage: benchmarks/gpu_campaign_rehearse.sh            (after benchmarks/gpu_campaign_prepare.sh)
# Environment: PY312 (a Python 3.12, default: python3.12 on PATH, else pyenv's), REHEARSAL_VENV (default
# /tmp/danet-gpu-rehearsal-venv; the first run installs torch's 0.5 GB wheel and its CUDA libraries there).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
[ -f .gpu/command.sh ] || { echo "rehearse: no .gpu/command.sh: run benchmarks/gpu_campaign_prepare.sh first" >&2; exit 1; }
VENV=${REHEARSAL_VENV:-/tmp/danet-gpu-rehearsal-venv}
# the GPU machine's versions (/work/.library/device/KINDS.md, nvidia-h200, 2026-11)
PACKAGES="torch==2.11.0 numpy==2.5.2 pillow matplotlib scipy tqdm tensorboard hypothesis python-dateutil six typing-extensions"

if ! "$VENV/bin/python" -c 'import torch, numpy, PIL, matplotlib, scipy, tqdm' 2>/dev/null; then
  PY312=${PY312:-$(command -v python3.12 2>/dev/null || ls -d "$(pyenv root 2>/dev/null || echo ~/.pyenv)"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)}
  [ -x "$PY312" ] || { echo "rehearse: no Python 3.12 found; set PY312=/path/to/python3.12" >&2; exit 1; }
  "$PY312" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q $PACKAGES
fi
"$VENV/bin/python" -c 'import sys, torch, numpy; print("rehearsal python", sys.version.split()[0], "torch", torch.__version__, "numpy", numpy.__version__)'

tree=$(mktemp -d /tmp/danet-rehearsal-tree.XXXXXX)
out=$(mktemp -d /tmp/danet-rehearsal-out.XXXXXX)
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$tree"
cp -r .whl .gpu "$tree/"
cmd=$(sed -e 's/nvidia-smi -L; //' -e 's#benchmarks/gpu_campaign.py #benchmarks/gpu_campaign.py --smoke #' \
          -e "s#/tmp/site#$tree/.site#g" .gpu/command.sh)
echo "rehearsal: in $tree (no .git), OUT=$out"
echo "  $cmd"
(cd "$tree" && PATH="$VENV/bin:$PATH" OUT="$out" bash -c "$cmd")

"$VENV/bin/python" - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
r = json.load(open(os.path.join(out, "results.json")))
status = {k: v["status"] for k, v in r["sections"].items()}
files = sorted(os.listdir(out))
print(f"rehearsal: {len(files)} files back {files}; commit from {r['environment']['git'].get('source')}; "
      f"sections {status}")
sys.exit(0 if set(status.values()) == {"ok"} and len(status) == 8 else 1)
PY
