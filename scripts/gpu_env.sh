# Sourced by the GPU scripts (gpu_all.sh, gpu_grader.sh): the environment of a run on a GPU node.
# Wheels carried in .whl/ (pytest-json-report, pytest-metadata, landlockpy, where pip has no
# network) go to /tmp/site; the kit itself comes first on PYTHONPATH; builds share one cache.
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export ATTN_KIT_BUILD_DIR=${ATTN_KIT_BUILD_DIR:-/tmp/attn_kit_build}
SOL=$PWD/solutions
