#!/usr/bin/env bash
# The GPU path, checked on a CUDA machine with internet access (PyPI and the HF hub): installs vLLM into its own
# .venv-gpu (vLLM pins its own CUDA torch; .venv keeps the CPU one), runs the vLLM and managed-server tests, then a
# tiny queries → templatize with SmolLM2-135M-Instruct, once in-process (backend vllm) and once through a managed
# `vllm serve` (backend serve). ~10 min the first time (the vllm wheel), ~3 min after.   bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-out/gpu_check}"
MODEL="${FINEINSTRUCTIONS_TEST_VLLM_MODEL:-HuggingFaceTB/SmolLM2-135M-Instruct}"
export HF_HUB_OFFLINE=0 TOKENIZERS_PARALLELISM=false FINEINSTRUCTIONS_TEST_VLLM_MODEL="$MODEL"

[ -x .venv-gpu/bin/python ] || python3 -m venv .venv-gpu
. .venv-gpu/bin/activate
python -c "import vllm" 2>/dev/null || python -m pip install -q vllm
python -m pip install -q -e ".[test]"
python -c "import torch, vllm; assert torch.cuda.is_available(), 'no CUDA device'; print('vllm', vllm.__version__, torch.cuda.get_device_name())"

# 1. tests: nothing may skip here (a skip would mean the GPU path went unchecked)
python -m pytest tests/llm/test_vllm.py tests/llm/test_managed_server.py -q -rs -p no:cacheprovider | tee "${TMPDIR:-/tmp}/gpu_check_pytest.txt"
! grep -q "SKIPPED" "${TMPDIR:-/tmp}/gpu_check_pytest.txt" || { echo "error: GPU tests were skipped" >&2; exit 1; }

# 2. end to end: queries → templatize on the bundled sample, in-process vLLM, then a managed vllm serve
rm -rf "$OUT" && mkdir -p "$OUT"
declare -A OPTS=(
  [vllm]='extra: {max_model_len: 2048, gpu_memory_utilization: 0.5, enforce_eager: true}'
  [serve]='server_args: "--max-model-len 2048 --gpu-memory-utilization 0.5 --enforce-eager"'
)
for backend in vllm serve; do
  cat > "$OUT/$backend.yaml" <<YAML
stages: [queries, templatize]
llm: {backend: $backend, model: $MODEL, cache: false, server_log_dir: $OUT/$backend/server-logs}
queries: {input: src/fineinstructions/data/sample_queries.jsonl}
templatize: {prompt_format: fewshot-completion, best_of: 3, batch_size: 256, llm: {${OPTS[$backend]}}}
YAML
  /usr/bin/time -f "$backend: %e s wall" fineinstructions run "$OUT/$backend.yaml" --output "$OUT/$backend" --no-progress
  python - "$OUT/$backend/templatize/summary.json" "$backend" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}: templatize rows in {s['rows_in']}, out {s['rows_out']}")
assert s["rows_out"] > 0, "no template came back"
PY
done
echo "gpu_check: OK ($OUT)"
