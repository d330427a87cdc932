#!/usr/bin/env bash
# Build the environment of the two JAX peers (dpm_solver_jax.py and jax_deis), outside
# this repository, and apply the two patches they need on current JAX:
#
#   bash benchmarks/peers/build_jax_peers.sh [DEST]            (DEST: /work/jax-peers)
#
# DPM_SOLVER_REPO and DEIS_REPO name the git repositories to take them from (a URL or a
# local clone); the commits are pinned below. DEST/venv gets jax (CPU), numpy and scipy;
# DEST/src gets dpm_solver_jax.py and jax_deis/, patched, and SOURCES.json (where they came
# from). Then run benchmarks/peers/jax_peer_runner.py with DEST/venv/bin/python and
# --sources DEST/src (benchmarks/dpm_benchmark.py --jax-peers does).
#
# The one patch (nothing else is changed): jax_deis/vpsde.py imports
# jax._src.numpy.lax_numpy._promote_dtypes_inexact, a private function that current JAX no
# longer has; the patch promotes the three arrays to their common inexact dtype with
# jnp.result_type instead. dpm_solver_jax.py is used as it is: its schedule methods call
# .reshape on t, so the runner passes t_start and t_end as arrays, not Python floats.
set -euo pipefail

DEST=${1:-/work/jax-peers}
DPM_SOLVER_REPO=${DPM_SOLVER_REPO:-https://github.com/LuChengTHU/dpm-solver}
DEIS_REPO=${DEIS_REPO:-https://github.com/qsh-zh/deis}
DPM_SOLVER_COMMIT=52bc3fbcd5de56d60917b826b15d2b69460fc2fa
DEIS_COMMIT=a30709f434ddddefaf2201d014ce4158e62c2a33
JAX_VERSION=$(python3 -c "import jax; print(jax.__version__)" 2>/dev/null || echo 0.10.2)

mkdir -p "$DEST"
if [ ! -x "$DEST/venv/bin/python" ]; then
    python3 -m venv "$DEST/venv"
fi
"$DEST/venv/bin/pip" install -q "jax==$JAX_VERSION" numpy scipy

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q --bare "$DPM_SOLVER_REPO" "$work/dpm-solver.git"
git clone -q --bare "$DEIS_REPO" "$work/deis.git"
rm -rf "$DEST/src"
mkdir -p "$DEST/src"
git --git-dir="$work/dpm-solver.git" show "$DPM_SOLVER_COMMIT:dpm_solver_jax.py" > "$DEST/src/dpm_solver_jax.py"
git --git-dir="$work/deis.git" archive "$DEIS_COMMIT" jax_deis | tar -x -C "$DEST/src"

"$DEST/venv/bin/python" - "$DEST/src" <<'PATCH'
import pathlib
import sys

source = pathlib.Path(sys.argv[1])


def patch(relative, old, new):
    path = source / relative
    text = path.read_text()
    if old not in text:
        raise SystemExit(f"{relative}: the text to patch is not there; check the pinned commit")
    path.write_text(text.replace(old, new))


patch("jax_deis/vpsde.py", "from jax._src.numpy.lax_numpy import _promote_dtypes_inexact\n", "")
patch("jax_deis/vpsde.py", "x, xp, fp = _promote_dtypes_inexact(x, _xp, _fp)",
      "dtype = jnp.result_type(float, x, _xp, _fp)\n      x, xp, fp = (jnp.asarray(a, dtype) for a in (x, _xp, _fp))")
PATCH

cat > "$DEST/src/SOURCES.json" <<EOF
{"dpm_solver_jax.py": {"repository": "$DPM_SOLVER_REPO", "commit": "$DPM_SOLVER_COMMIT"},
 "jax_deis": {"repository": "$DEIS_REPO", "commit": "$DEIS_COMMIT"},
 "patches": "benchmarks/peers/build_jax_peers.sh"}
EOF
echo "JAX peers ready: $DEST/venv/bin/python, --sources $DEST/src"
