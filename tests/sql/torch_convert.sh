#!/bin/sh
# torch_convert.sh - scripts/torch_convert.py end to end (driver:
# tests/sql/torch_convert_check.py): checkpoints of the authors' GANomaly and
# Skip-GANomaly and of anomalib's GANomaly, made from the reference nets, are
# imported, scored in SQL through Debian's Python and compared with PyTorch;
# exported back and compared weight for weight; refused cases must fail
# cleanly. Skipped, with the reason, under SANITIZE or without torch.
name=torch_convert
. tests/sql/lib/examples.sh
skip_uninstrumented python3
need_python
has_torch() { "$py" -c "import torch, numpy" 2>/dev/null; }
if ! has_torch && [ "$(id -u)" = 0 ]; then
  sh scripts/deps.sh python3-torch python3-numpy >/dev/null 2>&1
fi
has_torch || skip "$py cannot import torch and numpy (apt-get install -y python3-torch python3-numpy)"
out=$(ANOMALY_EXT=${ANOMALY_EXT:-./anomaly} OPENBLAS_NUM_THREADS=1 "$py" tests/sql/torch_convert_check.py 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ "$(printf '%s\n' "$out" | tail -n 1)" != "torch_convert: ok" ]; then
  printf '%s\n' "$out"
  echo "torch_convert: failed"
  exit 1
fi
echo "torch_convert: ok"
