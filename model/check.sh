#!/usr/bin/env bash
# Runs every spin check of model/kds.pml (see
# docs/decisions/0013-spin-model.md) and prints, per check, the result and
# spin's figures. Used by `make model`. Each check states what it expects;
# the script fails when a result differs.
#
# Usage: model/check.sh [WORKDIR]   (default: bin/model)
set -euo pipefail
cd "$(dirname "$0")"
MODEL_DIR=$PWD
WORK=${1:-$MODEL_DIR/../bin/model}

if ! command -v spin >/dev/null || ! command -v gcc >/dev/null; then
	missing=$(for t in spin gcc; do command -v $t >/dev/null || printf '%s ' $t; done)
	if [ "${CI:-}" = true ]; then
		echo "make model: the model check needs spin and gcc, missing: ${missing% }; install them with: apt-get update && apt-get install -y spin gcc" >&2
		exit 1
	fi
	echo "make model: skipped, missing ${missing% } (install with: apt-get install -y spin gcc; with CI=true this fails)"
	exit 0
fi

mkdir -p "$WORK"
cp "$MODEL_DIR"/kds.pml "$MODEL_DIR"/params.pml "$WORK"/
cd "$WORK"

# Bounds (see the decision record): A exercises the window reopening
# (1 type per side, 4 responses per type, stream window 2, connection
# window 1); B has more in flight than A (2 types per side, 2 responses
# each, windows of 1), which is where the naive design deadlocks.
A="-DTYPES=1 -DBURST=4 -DSTREAM_WIN=2 -DCONN_WIN=1"
B="-DTYPES=2 -DBURST=2 -DSTREAM_WIN=1 -DCONN_WIN=1"

failed=0
printf '%-34s %-6s %-32s %-28s %10s %12s %9s %7s\n' check bounds run result states transitions "mem MiB" time

# check NAME BOUNDS MODE EXPECT FLAGS...
#   MODE: safety (invalid end states and assertions) or an ltl name
#   EXPECT: ok, deadlock (an invalid end state) or violated (the claim)
check() {
	local name=$1 bounds=$2 mode=$3 expect=$4
	shift 4
	local flags
	case $bounds in A) flags=$A ;; B) flags=$B ;; esac
	flags="$flags $*"
	# shellcheck disable=SC2086
	spin $flags -a kds.pml >/dev/null
	local out=pan-$name.out run
	if [ "$mode" = safety ]; then
		# Breadth-first where a trail is expected: the shortest one.
		local bfs=
		[ "$expect" = ok ] || bfs=-DBFS
		gcc -O2 -w -DSAFETY -DNOCLAIM $bfs -DCOLLAPSE -DMEMLIM=2048 -o pan pan.c
		run="safety"
		./pan -m100000 -w24 >"$out" 2>&1 || true
	else
		gcc -O2 -w -DCOLLAPSE -DMEMLIM=2048 -o pan pan.c
		run="ltl $mode"
		./pan -m100000 -w24 -a -N "$mode" >"$out" 2>&1 || true
	fi
	local errors states trans mem secs result
	errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$out")
	states=$(awk '/states, stored/ {print $1; exit}' "$out")
	trans=$(awk '/transitions \(=/ {print $1; exit}' "$out")
	mem=$(awk '/total actual memory usage/ {print $1; exit}' "$out")
	secs=$(sed -n 's/^pan: elapsed time \([0-9.e+-]*\) seconds.*/\1/p' "$out")
	if grep -q '^pan:1: invalid end state' "$out"; then
		result="invalid end state"
	elif grep -q '^pan:1: \(acceptance cycle\|assertion violated\)' "$out"; then
		result="violated"
	elif [ "${errors:-x}" = 0 ] && ! grep -q 'Search not completed\|out of memory' "$out"; then
		result="holds"
	else
		result="incomplete"
	fi
	local verdict=ok
	case $expect in
	ok) [ "$result" = holds ] || verdict=FAIL ;;
	deadlock) [ "$result" = "invalid end state" ] || verdict=FAIL ;;
	violated) [ "$result" = violated ] || verdict=FAIL ;;
	esac
	[ "$expect" = ok ] || result="$result (expected)"
	[ "$verdict" = ok ] || { result="$result: UNEXPECTED"; failed=1; }
	printf '%-34s %-6s %-32s %-28s %10s %12s %9s %6ss\n' "$name" "$bounds" "$run" "$result" "${states:-?}" "${trans:-?}" "${mem:-?}" "${secs:-?}"
	if [ "$verdict" != ok ]; then
		sed 's/^/    /' "$out" | grep -v '^    *$' | head -40
	fi
	if [ "$expect" != ok ] && [ "$verdict" = ok ]; then
		cp kds.pml.trail "$name.trail"
		echo "$flags" >"$name.flags"
	fi
}

# readable_trail NAME: replays NAME's trail (spin -t -p) as a numbered list
# of what each side did, then where every goroutine was stuck.
readable_trail() {
	local name=$1 flags
	flags=$(cat "$name.flags")
	cp "$name.trail" kds.pml.trail
	# shellcheck disable=SC2086
	spin -t -p -l -g $flags kds.pml | awk '
	function side(p) { return p == 0 ? "zone  " : "global" }
	function what(k, t) { return (k == "SUB" ? "subscription" : (k == "ACK" ? "ACK" : "response")) " for type " t }
	/^ *EV / {
		sub(/^ *EV /, "")
		n = split($0, f, " ")
		if ($0 ~ /enqueued by/)      line = side(f[5]) "  hands the " what(f[1], f[2]) " to its send buffer"
		else if ($0 ~ /Send starts/) line = side(f[6]) "  send loop: Stream.Send(" what(f[1], f[2]) ")"
		else if ($0 ~ /sent by/)     line = side(f[5]) "  send loop: Send returned (" what(f[1], f[2]) " is in the peer'"'"'s window)"
		else if ($0 ~ /received by/) line = side(f[5]) "  receive loop: Recv -> " what(f[1], f[2])
		else line = $0
		printf "  %3d. %s\n", ++step, line
		next
	}
	/^spin: trail ends/ { ended = 1; print "  -- nothing can move any more; where each goroutine is stuck:"; next }
	ended && /queue [0-9]+ \((conn|strm|out)\[/ {
		q = $0; sub(/^[ \t]*queue [0-9]+ \(/, "", q); sub(/\):/, ":", q); queues = queues "       " q "\n"; next
	}
	ended && /^[0-9]+:[ \t]+proc/ {
		if (pname != "") report()
		pname = $0; sub(/^[0-9]+:[ \t]+proc +[0-9]+ \(/, "", pname); sub(/:.*/, "", pname)
		valid = ($0 ~ /valid end state/); pside = ""; next
	}
	ended && /:p = [01]$/ { pside = substr($0, length($0)); next }
	function report() {
		if (valid || pname == "finished" || pname == "") return
		if (pname == "sendLoop")       d = "send loop: inside Stream.Send, no window credit (the peer does not read)"
		else if (pname == "recvLoop")  d = "receive loop: waiting for room in the send buffer, not reading"
		else if (pname == "subscriber") d = "subscriber: waiting for room in the send buffer"
		else d = pname " stuck"
		printf "       %s  %s\n", side(pside + 0), d
	}
	END {
		if (pname != "") report()
		printf "  -- HTTP/2 windows (conn = connection, strm = stream receive buffer; [0] zone->global, [1] global->zone) and send buffers:\n%s", queues
	}'
}

check naive-deadlocks B safety deadlock -DNAIVE
check engine A safety ok
# The largest check (about 4 million states); `MODEL_ALL=1 make model`.
if [ "${MODEL_ALL:-}" = 1 ]; then check engine B safety ok; fi
check engine-no-send-timer A safety ok -DSEND_TIMER=0
check engine-no-send-timer B safety ok -DSEND_TIMER=0
check engine-delivered A delivered ok
check engine-no-send-timer-delivered B delivered ok -DSEND_TIMER=0
check engine-headroom0-no-overflow A no_overflow ok -DHEADROOM_OVERRIDE=0
check violator-overflow-means-violation A overflow_means_violation ok -DVIOLATOR -DHEADROOM_OVERRIDE=0
check violator-overflows A no_overflow violated -DVIOLATOR -DHEADROOM_OVERRIDE=0
check engine-recv-blocks-deadlocks A safety deadlock -DRECV_BLOCKS -DSEND_TIMER=0

echo
echo "The naive design's deadlock (shortest trail, spin -t -p):"
readable_trail naive-deadlocks

if [ "$failed" != 0 ]; then
	echo "make model: a check did not give the expected result (output above; files in $WORK)" >&2
	exit 1
fi
