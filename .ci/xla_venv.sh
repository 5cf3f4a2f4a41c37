#!/usr/bin/env bash
# Build, or reuse, the PyTorch/XLA venv that the XLA tests and benchmark run in.
#
# torch_xla 2.9.0 needs exactly torch 2.9.0 (from PyPI that is the CUDA build: ~7 GB with its nvidia-* wheels),
# so it cannot share the main venv (torch 2.13). The venv lives outside the repo, keyed by the pinned versions:
#   ${SMA_XLA_VENV:-$HOME/.cache/sma_kit/xla-venv-torch2.9.0-xla2.9.0}
# and is reused when it is healthy (torch 2.9.0 + torch_xla import, an XLA CPU device works). The kit itself is
# installed editable from this checkout (without the torch extra), re-pointed when the checkout moved.
#
# Usage:  bash .ci/xla_venv.sh          # prints the venv path on the last line of stdout
#         VENV=$(bash .ci/xla_venv.sh | tail -1); PJRT_DEVICE=CPU "$VENV/bin/python" -m pytest -q tests/test_xla.py
# Exit status is non-zero, with a message on stderr, whenever the venv cannot be built: it never skips silently.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
TORCH_VERSION=2.9.0
XLA_VERSION=2.9.0
VENV="${SMA_XLA_VENV:-$HOME/.cache/sma_kit/xla-venv-torch${TORCH_VERSION}-xla${XLA_VERSION}}"
PY="${SMA_XLA_PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PJRT_DEVICE=CPU

die() { echo "xla_venv.sh: ERROR: $*" >&2; exit 1; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND; the XLA venv at $VENV is not usable"' ERR

log() { echo "xla_venv.sh: $*" >&2; }

torch_ok() {  # the pinned torch + torch_xla import and an XLA CPU device computes
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$TORCH_VERSION" "$XLA_VERSION" >/dev/null 2>&1 <<'EOF'
import sys, torch, torch_xla
assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__
assert torch_xla.__version__.split("+")[0] == sys.argv[2], torch_xla.__version__
x = torch.ones(2, 2, device=torch_xla.device())
assert float((x @ x).sum().cpu()) == 8.0
EOF
}

kit_ok() {  # sma_kit imports from *this* checkout, and pytest is there
  [ "$("$VENV/bin/python" -c 'import sma_kit, pytest, os; print(os.path.dirname(os.path.dirname(os.path.realpath(sma_kit.__file__))))' 2>/dev/null)" = "$(realpath "$REPO")" ]
}

start=$SECONDS
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"; flock 9   # one build at a time; a second caller waits, then reuses it
if torch_ok; then
  log "reusing $VENV (torch $TORCH_VERSION, torch_xla $XLA_VERSION)"
else
  if [ -e "$VENV" ]; then log "$VENV exists but is not healthy: rebuilding it"; rm -rf "$VENV"; fi
  command -v "$PY" >/dev/null || die "$PY not found (set SMA_XLA_PYTHON to a Python 3.10-3.13 interpreter)"
  log "building $VENV (torch==$TORCH_VERSION torch_xla==$XLA_VERSION, ~7 GB; this takes several minutes)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  # torch and torch_xla together so the resolver can never pick a torch that torch_xla does not match
  "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" "torch_xla==$XLA_VERSION" \
    || die "pip could not install torch==$TORCH_VERSION torch_xla==$XLA_VERSION into $VENV"
  torch_ok || die "torch_xla $XLA_VERSION was installed in $VENV but does not import or cannot run on PJRT_DEVICE=CPU"
fi

if ! kit_ok; then
  log "installing sma_kit from $REPO (editable, no torch extra) and pytest"
  # the kit's requirements (not torch: that is pinned above) plus the test runner
  "$VENV/bin/pip" install -q -e "$REPO" pytest || die "could not install sma_kit from $REPO into $VENV"
  kit_ok || die "sma_kit in $VENV does not import from $REPO"
  # the kit must not have moved torch off the pinned version
  torch_ok || die "installing sma_kit changed torch in $VENV (need torch==$TORCH_VERSION for torch_xla==$XLA_VERSION)"
fi

log "ready in $((SECONDS - start)) s: $VENV"
echo "$VENV"
