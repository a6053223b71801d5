#!/usr/bin/env bash
# The seed's one-off benchmark, now a thin wrapper over volley-bench:
#
#   bench/bench.sh SERVER_CORES CLIENT_CORES CLIENTS PROGRAM [ARGS...]
#
# starts `PROGRAM -p PORT ARGS...` on the first SERVER_CORES usable CPUs and CLIENTS clients
# on the next CLIENT_CORES CPUs. An argument that is exactly SCORES or CCORES becomes the
# server's or the clients' core count, as in the seed. Further volley-bench options can be
# given in VOLLEY_BENCH_OPTIONS, for example
#
#   VOLLEY_BENCH_OPTIONS="--max-time 10s --precision 5%" bench/bench.sh 1 1 1 target/servers/go
#
# The volley-bench command is printed on stderr, then run in this script's place; its exit
# status is volley-bench's (0 significant, 1 failed, 2 bad input, 3 not significant).
set -euo pipefail

fail() {
	echo "$0: error: $*" >&2
	exit 2
}

(($# >= 4)) || fail "usage: $0 SERVER_CORES CLIENT_CORES CLIENTS PROGRAM [ARGS...]"
scores=$1 ccores=$2 clients=$3 program=$4
shift 4
for count in "$scores" "$ccores" "$clients"; do
	[[ $count =~ ^[1-9][0-9]*$ ]] || fail "$count is not a count (1 or more)"
done

# The CPUs this process may use (its affinity list, like 0-3,8), one by one.
allowed=$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status)
cpus=()
IFS=, read -ra ranges <<<"$allowed"
for range in "${ranges[@]}"; do
	for ((cpu = ${range%-*}; cpu <= ${range#*-}; cpu++)); do
		cpus+=("$cpu")
	done
done
if ((scores + ccores > ${#cpus[@]})); then
	fail "$scores server + $ccores client cores need $((scores + ccores)) CPUs;" \
		"this process may use ${#cpus[@]} ($allowed)"
fi
join() {
	local IFS=,
	echo "$*"
}
server_cpus=$(join "${cpus[@]:0:scores}")
client_cpus=$(join "${cpus[@]:scores:ccores}")

args=()
for arg in "$@"; do
	case $arg in
	SCORES) args+=("{server_cores}") ;;
	CCORES) args+=("{client_cores}") ;;
	*) args+=("$arg") ;;
	esac
done

if command -v volley-bench >/dev/null 2>&1; then
	command=(volley-bench)
else
	command=("${PYTHON:-python3}" -m volley bench)
fi
options=()
read -ra options <<<"${VOLLEY_BENCH_OPTIONS:-}"
command+=(--server-cores "$server_cpus" --cores "$client_cpus" --clients "$clients")
command+=(${options[@]+"${options[@]}"} "$program")
if ((${#args[@]})); then
	command+=(-- "${args[@]}")
fi
printf '%q ' "${command[@]}" >&2
echo >&2
exec "${command[@]}"
