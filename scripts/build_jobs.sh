# Sourced by scripts/install.sh and scripts/build_mmcv_cuda.sh: how many compile jobs a build runs.
# build_jobs GB_PER_JOB [WHAT]: MAX_JOBS when set; else the machine's cores, bounded by its available memory
# at GB_PER_JOB a job (a g++ job on torch's headers takes 1-2 GB, an nvcc job a few), at least 1. The choice
# is printed (to stderr), so that a slow build on a big node is not a mystery.
build_jobs() {
  local per_job_gb=$1 what=${2:-build} cores available_kb by_memory jobs
  if [ -n "${MAX_JOBS:-}" ]; then
    echo "$what: $MAX_JOBS compile job(s) (MAX_JOBS)" >&2
    echo "$MAX_JOBS"
    return
  fi
  cores=$(nproc 2>/dev/null || echo 2)
  available_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo 2>/dev/null || true)
  by_memory=$(( ${available_kb:-0} / (per_job_gb * 1024 * 1024) ))
  [ "$by_memory" -ge 1 ] || by_memory=1
  jobs=$(( cores < by_memory ? cores : by_memory ))
  echo "$what: $jobs compile job(s): $cores core(s), $(( ${available_kb:-0} / 1024 / 1024 )) GB available at" \
       "$per_job_gb GB a job (MAX_JOBS=N overrides)" >&2
  echo "$jobs"
}
