#!/usr/bin/env bash
# Build the peer's own virtual environment (kokoro-onnx 0.6.1) at bench-env/.
#
# kokoro-onnx needs plain `phonemizer` 3.4, which clashes with the `phonemizer-fork`
# that misaki (Spool's G2P) needs, so the peer gets a separate environment.
# onnxruntime is pinned to the version in the project's .venv so both systems run
# the same runtime. The voices .npz (name -> float32 (510, 1, 256)) is built from
# the npm voice files in the Spool assets cache.
#
# Usage: benchmarks/setup_peer.sh [--force]
# Env:   SPOOL_ASSETS_DIR (default ~/.cache/spool), BENCH_ENV (default <repo>/bench-env)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
env_dir="${BENCH_ENV:-$repo/bench-env}"
assets="${SPOOL_ASSETS_DIR:-$HOME/.cache/spool}"
project_python="$repo/.venv/bin/python"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$project_python" ]]; then python="$project_python"; else python="python3"; fi
fi

if [[ "${1:-}" == "--force" ]]; then
  rm -rf "$env_dir"
fi

if [[ -x "$env_dir/bin/python" && -f "$env_dir/voices-v1.0.npz" && -f "$env_dir/.ready" ]]; then
  echo "peer environment ready: $env_dir"
  exit 0
fi

# Same onnxruntime and numpy as the project, when the project's venv has them.
pins=()
if [[ -x "$project_python" ]]; then
  ort="$("$project_python" -c 'import importlib.metadata as m; print(m.version("onnxruntime"))' 2>/dev/null || true)"
  [[ -n "$ort" ]] && pins+=("onnxruntime==$ort")
fi

echo "creating $env_dir with $("$python" -c 'import sys; print(sys.executable)')"
# The project's venv python is itself a venv; use its base interpreter.
base="$("$python" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')"
"$base" -m venv "$env_dir"
"$env_dir/bin/pip" install --quiet --upgrade pip >/dev/null 2>&1 || true
"$env_dir/bin/pip" install --quiet "kokoro-onnx==0.6.1" "${pins[@]}"

"$env_dir/bin/python" - "$assets/voices" "$env_dir/voices-v1.0.npz" <<'PY'
"""Pack the npm voice files (raw float32 510x256) into kokoro-onnx's .npz layout."""
import sys
from pathlib import Path

import numpy as np

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(src.glob("*.bin"))
if not files:
    sys.exit(f"no voice .bin files in {src}: run `spool models` first")
voices = {}
for f in files:
    data = np.fromfile(f, dtype="<f4")
    if data.size != 510 * 256:
        sys.exit(f"{f} has {data.size} floats, expected 510*256")
    voices[f.stem] = data.reshape(510, 1, 256).astype(np.float32)
np.savez(dst, **voices)
print(f"wrote {len(voices)} voices to {dst}")
PY

"$env_dir/bin/python" -c 'import kokoro_onnx, onnxruntime, phonemizer; print("kokoro-onnx ok; onnxruntime", onnxruntime.__version__)'
touch "$env_dir/.ready"
echo "peer environment ready: $env_dir"
