#!/usr/bin/env bash
# The GPU check in one command, from the repository root of a lent GPU machine (bench/README.md):
#     bench/gpu_check.sh "$OUT" [python -m bench.gpu_check options]
# Installs the wheels carried in .whl/ (if any) into a scratch folder on PYTHONPATH, then runs every
# part of bench/gpu_check.py, writing gpu_check.json, gpu_check.md and gpu_check.log into the folder
# given. A part whose package is missing is skipped with the reason.
set -uo pipefail
out=${1:?usage: bench/gpu_check.sh OUT_DIR [bench.gpu_check options]}
shift
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    site=$(mktemp -d /tmp/spatialgeo-site.XXXXXX)
    if "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target "$site" .whl/*.whl; then
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        echo "carried wheels installed: $(cd .whl && ls -- *.whl | tr '\n' ' ')"
    else
        echo "the carried wheels did not install; the parts that need them are skipped" >&2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$python" -m bench.gpu_check --out "$out" "$@"
