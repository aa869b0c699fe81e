#!/usr/bin/env bash
# On an air-gapped GPU host: check and install a bundle made by `pytest-mooncake bundle`,
# then run the qualification suites; results land in .mooncake-results/.
# Usage: bash scripts/qualify-offline.sh BUNDLE_DIR [pytest args...]
set -euo pipefail
bundle=${1:?usage: qualify-offline.sh BUNDLE_DIR [pytest args...]}
shift
cd "$bundle"
python3 - <<'PY'
import hashlib, json, pathlib, sys
manifest = json.loads(pathlib.Path("manifest.json").read_text())
for part in manifest["parts"]:
    digest = hashlib.sha256(pathlib.Path(part["name"]).read_bytes()).hexdigest()
    if digest != part["sha256"]:
        sys.exit(f"{part['name']}: sha256 {digest} != manifest {part['sha256']}; copy the part again")
print(f"{len(manifest['parts'])} parts verified (torch {manifest['torch']}, Python {manifest['python']})")
PY
mkdir -p wheelhouse
for part in part-*.tar; do tar -xf "$part" -C wheelhouse; done
python3 -m pip install --no-index --find-links wheelhouse wheelhouse/*.whl
# Measured on an offline H100: no flashinfer in the bundle, no network, CUDA runtime from torch's wheels.
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_HOST_IP=127.0.0.1 HF_HUB_OFFLINE=1
cudart=$(python3 -c "import nvidia.cuda_runtime, os; print(os.path.join(list(nvidia.cuda_runtime.__path__)[0], 'lib'))" 2>/dev/null || true)
[ -n "$cudart" ] && export LD_LIBRARY_PATH="$cudart:${LD_LIBRARY_PATH:-}"
cd - >/dev/null
python3 -m pytest suites/ "$@"
