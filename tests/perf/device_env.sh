# Sourced by the GPU scripts in tests/perf: $out (from $OUT, default device-out/) exists, Python output is
# unbuffered, and packages the machine lacks, carried as wheels in .whl/, are installed to /tmp/site.
out=${OUT:-device-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
