# Sourced by benchmarks/cpu.sh and benchmarks/gpu.sh: one benchmark step with its own time limit.
# run <seconds> <command...>: a failed or timed-out step is reported and the others still run; $status
# ends as 1 if any step failed.
status=0
run() {
  local limit=$1
  shift
  echo "+ $*" >&2
  timeout "$limit" "$@" || {
    echo "failed ($?): $*" >&2
    status=1
  }
}
