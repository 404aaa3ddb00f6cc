#!/bin/bash
# SPDX-License-Identifier: MIT
# report.sh OUT BROKER WORK: the host-side half of scripts/xen-guest-test,
# run on what dom0 left in OUT (its xg-out directory):
# - for every QEMU that served xg-brk or xg-sr (created, restored,
#   migrated), its call trace (dmop-calltrace.so) against its broker's
#   audit: the same DMOPs in the same order with the same results, none
#   refused;
# - per phase, the time with and without the broker and their ratio;
# - per QEMU of xg-brk and xg-sr, the DMOPs its broker saw posted and
#   synchronous (none posted where qemu-traced set DMOP_POSTED=0);
# - per phase and op, the DMOP count, mean and peak rate (per second);
# - the argument ranges QEMU used per op and field, and the policy that
#   `dmop-broker policy learn` derives from the audit (WORK/learned-*).
# Prints TEST lines and the tables on stdout.
set -uo pipefail
OUT=$1 BROKER=$2 WORK=$3

# calls_of DOMID: "op rc" per call QEMU made (rc as Xen gave it: 0 or -errno)
calls_of() {
    sed -n 's/^[0-9.]* op=\([a-z_]*\) .* rc=\(-\{0,1\}[0-9]*\) errno=\([0-9]*\)$/\1 \2 \3/p' "$OUT/calltrace-$1.log" 2>/dev/null |
        awk '{ print $1, ($2 == 0 ? 0 : -$3) }'
}
# The brokers' audit files of guest G: the wrapper's default,
# dmop-broker-NAME.log next to libxl's qemu-dm-NAME.log (NAME is
# G--incoming while xl migrate receives the guest).
G=xg-brk
audits() { cat "$OUT"/dmop-broker-$G.log "$OUT"/dmop-broker-$G--*.log 2>/dev/null; }
# audit_of DOMID: the broker's audit lines for that domid, in order.
audit_of() {
    audits | grep -a " domid=$1 op=" | grep -av 'forwards:' || true
}

# ---- the broker forwarded every call QEMU made, with Xen's result ------------
for G in xg-brk xg-sr; do
    [ -s "$OUT/domids-$G.txt" ] || continue
    while read -r how _ domid _; do
        calls=$(calls_of "$domid")
        audit=$(audit_of "$domid")
        forwarded=$(echo "$audit" | grep -a 'verdict=forward' | sed -n 's/.* op=\([a-z_]*\) verdict=forward .* rc=\(-\{0,1\}[0-9]*\) .*/\1 \2/p')
        refused=$(echo "$audit" | grep -ac 'verdict=refuse')
        n=$(echo "$calls" | grep -c .)
        m=$(echo "$forwarded" | grep -c .)
        name="$G.$how.d$domid"
        if [ "$n" -gt 0 ] && [ "$calls" = "$forwarded" ]; then
            echo "TEST $name.audit-matches-trace PASS $n calls QEMU made, each forwarded in order with the result Xen gave ($(echo "$calls" | awk '{ c[$1]++ } END { for (o in c) printf "%s %d, ", o, c[o] }' | sed 's/, $//'))"
        else
            first=$(diff <(echo "$calls") <(echo "$forwarded") | grep -m2 '^[<>]' | tr '\n' ' ')
            echo "TEST $name.audit-matches-trace FAIL QEMU made $n calls, the audit shows $m forwarded; first difference: ${first:-none}"
        fi
        if [ "$refused" = 0 ]; then
            echo "TEST $name.audit-no-refusal PASS no DMOP refused"
        else
            echo "TEST $name.audit-no-refusal FAIL $refused refused: $(echo "$audit" | grep -a 'verdict=refuse' | grep -o 'op=[a-z_]* verdict=refuse reason=[A-Z_]*' | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
        fi
    done <"$OUT/domids-$G.txt"
    # One "session end" per broker: each QEMU's broker saw its QEMU go.
    brokers=$(grep -c . "$OUT/domids-$G.txt")
    ends=$(audits | grep -ac 'session end:')
    if [ "$ends" -ge "$brokers" ] && [ "$brokers" -gt 0 ]; then
        echo "TEST $G.audit-session-ends PASS $brokers brokers, $ends \"session end\" lines ($(audits | grep -a 'session end:' | grep -a -o 'reason=[^ ]*' | sort | uniq -c | tr -s ' ' | tr '\n' ';'))"
    else
        echo "TEST $G.audit-session-ends FAIL $brokers brokers, $ends \"session end\" lines"
    fi
done
G=xg-brk

# ---- per-phase windows ---------------------------------------------------------
# windows NAME: "phase start end" in dom0 time; boot runs from xl create.
windows() {
    local t0
    t0=$(awk '$1 == "create" { print $4 }' "$OUT/domids-$1.txt" 2>/dev/null)
    [ -n "$t0" ] || return 0
    { echo "boot $t0"; cat "$OUT/phases-$1.txt"; } | awk 'NR > 1 { print p, t, $2 } { p = $1; t = $2 }' | grep -v '^end '
}
# trace_of NAME: all call lines of the guest's QEMUs, "t op", time-ordered.
trace_of() {
    for d in $(awk '{ print $3 }' "$OUT/domids-$1.txt" 2>/dev/null); do
        sed -n 's/^\([0-9.]*\) op=\([a-z_]*\) .*/\1 \2/p' "$OUT/calltrace-$d.log" 2>/dev/null
    done | sort -n
}
gtime() { sed -n "s/^XG RESULT time\.$2=//p" "$OUT/console-$1.txt" 2>/dev/null | tail -1; }

echo "---- time per phase (s): guest clock, boot from xl create to init on dom0's clock ----"
printf '%-10s %10s %10s %8s\n' phase without with ratio
for p in boot probe disk net display; do
    if [ $p = boot ]; then
        a=$(windows xg-plain | awk '$1 == "boot" { printf "%.2f", $3 - $2 }')
        b=$(windows xg-brk | awk '$1 == "boot" { printf "%.2f", $3 - $2 }')
    else
        a=$(gtime xg-plain $p) b=$(gtime xg-brk $p)
    fi
    awk -v p=$p -v a="${a:-}" -v b="${b:-}" 'BEGIN { r = (a > 0 && b != "") ? sprintf("%.2f", b / a) : "-"; printf "%-10s %10s %10s %8s\n", p, a == "" ? "-" : a, b == "" ? "-" : b, r }'
done | tee "$WORK/phase-times.txt"

for g in xg-plain xg-brk; do
    [ -s "$OUT/phases-$g.txt" ] || continue
    echo "---- $g: DMOPs per phase and op (count, mean/s over the phase, peak in one second) ----"
    trace_of $g >"$WORK/trace-$g.txt"
    windows $g | while read -r ph a b; do
        awk -v ph=$ph -v a=$a -v b=$b '$1 >= a && $1 < b {
                c[$2]++; s = int($1); k = $2 " " s; per[k]++; if (per[k] > peak[$2]) peak[$2] = per[k]; n++ }
            END { d = b - a; printf "%-8s %6.1fs %6d DMOPs\n", ph, d, n
                for (o in c) printf "    %-34s %6d %8.1f/s %6d/s peak\n", o, c[o], c[o] / d, peak[o] }' "$WORK/trace-$g.txt" |
            { read -r head; echo "$head"; sort -k2 -rn; }
    done
done

# ---- posted and synchronous DMOPs ---------------------------------------------
# Per QEMU of xg-brk and xg-sr, its broker's count of requests and of posted
# ones (the session end line, found by QEMU's pid), against the posting mode
# qemu-traced recorded.
for G in xg-brk xg-sr; do
    [ -s "$OUT/domids-$G.txt" ] || continue
    echo "---- $G: DMOPs each QEMU's broker saw, posted and synchronous ----"
    printf '%-24s %-8s %9s %9s %11s\n' qemu posting requests posted synchronous
    while read -r how _ domid _; do
        mode=$(cat "$OUT/posting-$domid.txt" 2>/dev/null)
        pid=$(audit_of "$domid" | head -1 | grep -ao 'peer_pid=[0-9]*' | cut -d= -f2)
        end=$(audits | grep -a "session end: peer_pid=${pid:-none} reason=" | tail -1)
        req=$(echo "$end" | grep -o ' requests=[0-9]*' | cut -d= -f2)
        posted=$(echo "$end" | grep -o ' posted=[0-9]*' | cut -d= -f2)
        if [ -z "$req" ] || [ -z "$posted" ] || [ "$req" = 0 ]; then
            echo "TEST $G.$how.d$domid.posting FAIL no session end line with requests and posted counts for QEMU pid ${pid:-unknown}" >>"$WORK/posting-tests"
            continue
        fi
        printf '%-24s %-8s %9s %9s %11s\n' "$how.d$domid" "${mode:-?}" "$req" "$posted" $((req - posted))
        if [ "$mode" = off ]; then
            r=$([ "$posted" = 0 ] && echo PASS || echo FAIL)
            echo "TEST $G.$how.d$domid.posting-off $r DMOP_POSTED=0: $req requests, $posted posted (want none), $((req - posted)) synchronous" >>"$WORK/posting-tests"
        else
            r=$([ "$mode" = on ] && [ "$posted" -gt 0 ] && echo PASS || echo FAIL)
            echo "TEST $G.$how.d$domid.posting $r posting ${mode:-mode not recorded}: $req requests, $posted posted, $((req - posted)) synchronous" >>"$WORK/posting-tests"
        fi
    done <"$OUT/domids-$G.txt"
    cat "$WORK/posting-tests" 2>/dev/null
    rm -f "$WORK/posting-tests"
done
G=xg-brk

# ---- modified_memory while log-dirty is on ----------------------------------------
# Per QEMU of xg-sr (libxl turns log-dirty on for xl save and xl migrate):
# the calls, the pages they name, the largest extent, Xen's results.
if [ -s "$OUT/domids-xg-sr.txt" ]; then
    echo "---- xg-sr: modified_memory per QEMU (log-dirty on during xl save and xl migrate) ----"
    printf '%-24s %6s %7s %8s %11s  %s\n' qemu calls pages largest nr_extents results
    while read -r how _ domid _; do
        sed -n 's/^[0-9.]* op=modified_memory .*nr_extents=\([0-9]*\) pages=\([0-9]*\) largest_extent=\([0-9]*\) rc=\(-\{0,1\}[0-9]*\) errno=\([0-9]*\)$/\1 \2 \3 \4 \5/p' \
            "$OUT/calltrace-$domid.log" 2>/dev/null |
            awk -v q="$how.d$domid" '{ n++; p += $2; if ($3 > l) l = $3; if ($1 > x) x = $1; if (n == 1 || $1 < m) m = $1; r[$4 == 0 ? "ok" : "errno-" $5]++ }
                END { s = ""; for (k in r) s = s k "=" r[k] " "; printf "%-24s %6d %7d %8d %11s  %s\n", q, n, p, l, n ? m ".." x : "-", s == "" ? "-" : s }'
    done <"$OUT/domids-xg-sr.txt"
fi

# ---- argument ranges and the learned policy -------------------------------------
# calls_all NAME: every call line of all the guest's QEMUs.
calls_all() { for d in $(awk '{ print $3 }' "$OUT/domids-$1.txt" 2>/dev/null); do cat "$OUT/calltrace-$d.log" 2>/dev/null; done; }
for g in xg-plain xg-brk xg-sr; do
    [ -s "$OUT/domids-$g.txt" ] || continue
    calls_all $g | awk 'function num(v,   i, x, c) { if (v !~ /^0x/) return v + 0
                x = 0; for (i = 3; i <= length(v); i++) { c = index("0123456789abcdef", substr(tolower(v), i, 1)); x = x * 16 + c - 1 }
                return x }
            function hex(x,   s, d) { if (x == 0) return "0x0"; s = ""
                while (x >= 1) { d = x % 16; s = substr("0123456789abcdef", d + 1, 1) s; x = (x - d) / 16 }
                return "0x" s }
            { op = ""; for (i = 2; i <= NF; i++) { split($i, kv, "="); k = kv[1]; v = kv[2]
                if (k == "op") { op = v; n[op]++; continue }
                if (k == "dom" || k == "rc" || k == "errno" || k == "sbdf" || v == "") continue
                x = num(v); key = op " " k
                if (!(key in lo) || x < lo[key]) lo[key] = x; if (!(key in hi) || x > hi[key]) hi[key] = x } }
            END { for (key in lo) { split(key, a, " "); printf "%-34s %-16s %.0f..%.0f (%s..%s) in %d calls\n", a[1], a[2], lo[key], hi[key], hex(lo[key]), hex(hi[key]), n[a[1]] } }' |
        sort >"$WORK/learned-$g.ranges"
    # The distinct calls (op and arguments, without results and counts): the
    # evidence a unit test holds policy/qemu-xen.policy against.
    calls_all $g | sed -E 's/^[0-9.]+ //; s/ (dom|rc|errno|dirty|pages|largest_extent)=[^ ]*//g' | LC_ALL=C sort -u >"$WORK/learned-$g.calls"
    echo "---- $g: argument ranges QEMU used (all its QEMUs) ----"
    cat "$WORK/learned-$g.ranges"
done
for g in xg-brk xg-sr; do
    audit_files=()
    for f in "$OUT"/dmop-broker-$g.log "$OUT"/dmop-broker-$g--*.log; do [ -e "$f" ] && audit_files+=(--audit "$f"); done
    if [ ${#audit_files[@]} -gt 0 ] && "$BROKER" policy learn "${audit_files[@]}" | sed "s|$OUT/||g" >"$WORK/learned-$g.policy"; then
        echo "---- $g: dmop-broker policy learn (its brokers' audit files) ----"
        cat "$WORK/learned-$g.policy"
    fi
done
exit 0
