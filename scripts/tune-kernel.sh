#!/usr/bin/env bash
# Check, apply and revert the kernel settings that matter when benchmarking a static-file server
# on loopback: accept queues, ephemeral ports, file and pipe limits, socket buffers, io_uring.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE_FILE="${TUNE_STATE:-/var/tmp/ringd-tune.state}"
# Where sysctls live (overridable so the script can be tested against a scratch tree).
PROC_SYS="${TUNE_PROC_SYS:-/proc/sys}"

usage() {
    cat <<EOF
Usage: scripts/tune-kernel.sh check|apply|revert [--state FILE]

  check    print each setting with its current value, the recommended one and why it matters
  apply    save the current values of the settings that differ to the state file, then set the
           recommended ones (root only); settings that cannot be written (a read-only
           /proc/sys in a container) are reported and left alone
  revert   restore exactly the values the state file saved (root only), then remove it

  --state FILE   state file (default: \$TUNE_STATE or /var/tmp/ringd-tune.state)
  -h, --help     this text

RLIMIT_NOFILE and RLIMIT_MEMLOCK are per process: they are checked, not applied
(scripts/bench.sh raises the soft open-files limit to the hard one for what it starts).
EOF
}

# name | rule | recommended | why.  Rules: min (at least), max (at most), eq (exactly),
# range (a "low high" pair: low at most, high at least).
SETTINGS=(
    "net.core.somaxconn|min|65535|caps every listen() backlog; connect-per-request bursts overflow a short accept queue (dropped SYNs retry after 1 s)"
    "net.ipv4.tcp_max_syn_backlog|min|65535|queue of half-open connections; when full the kernel drops SYNs or falls back to SYN cookies"
    "net.core.netdev_max_backlog|min|65536|per-CPU input packet queue that loopback traffic passes through; overflow shows as retransmits"
    "net.ipv4.ip_local_port_range|range|20000 65535|ephemeral ports for the generator's connections, which the connect scenario churns through; starts above the benchmark's server ports (18081-18093)"
    "net.ipv4.tcp_tw_reuse|eq|1|lets new outgoing connections reuse ports in TIME_WAIT, which the connect scenario leaves by the thousand"
    "net.ipv4.tcp_fin_timeout|max|15|how long orphaned FIN_WAIT_2 sockets linger before their resources are freed"
    "fs.file-max|min|2097152|system-wide cap on open files; every connection, cached fd and pipe is one"
    "fs.nr_open|min|1048576|ceiling for any process's RLIMIT_NOFILE"
    "fs.pipe-max-size|min|1048576|largest pipe an unprivileged process may request with F_SETPIPE_SZ (ringd splices files through pipes)"
    "fs.pipe-user-pages-soft|min|262144|per-user pipe page budget; past it new pipes shrink to one page and splicing crawls (the default 16384 pages is ~1000 64 KiB pipes)"
    "net.core.rmem_max|min|16777216|cap on SO_RCVBUF a socket may ask for"
    "net.core.wmem_max|min|16777216|cap on SO_SNDBUF; large-file sends keep more bytes in flight per call with a bigger send buffer"
    "kernel.io_uring_disabled|eq|0|0 lets every process use io_uring (1: only io_uring_group members, 2: nobody); ringd's uring backends need it"
)

sysctl_path() { echo "$PROC_SYS/${1//.//}"; }

# Current value with whitespace normalised ("32768	60999" → "32768 60999"); empty if absent.
read_sysctl() {
    local p
    p="$(sysctl_path "$1")"
    [[ -f "$p" && -r "$p" ]] || return 0
    { tr -s ' \t\n' ' ' <"$p" | sed 's/^ //; s/ $//'; } 2>/dev/null || true
}

write_sysctl() {
    local p
    p="$(sysctl_path "$1")"
    { printf '%s\n' "$2" >"$p"; } 2>/dev/null
}

# Is CURRENT acceptable under RULE/RECOMMENDED?
meets() {
    local rule="$1" rec="$2" cur="$3"
    [[ -n "$cur" ]] || return 1
    case "$rule" in
    min) ((cur >= rec)) ;;
    max) ((cur <= rec)) ;;
    eq) [[ "$cur" == "$rec" ]] ;;
    range)
        local clo chi rlo rhi
        read -r clo chi <<<"$cur"
        read -r rlo rhi <<<"$rec"
        ((clo <= rlo && chi >= rhi))
        ;;
    esac
}

rule_word() {
    case "$1" in
    min) echo ">= $2" ;;
    max) echo "<= $2" ;;
    eq) echo "= $2" ;;
    range) echo "$2" ;;
    esac
}

limit_line() {
    local name="$1" soft="$2" hard="$3" rec="$4" why="$5" state=ok
    if [[ "$hard" != unlimited ]] && { [[ "$rec" == unlimited ]] || ((hard < rec)); }; then
        state=LOW
    fi
    printf '%-30s %-22s %-22s %-6s %s\n' "$name" "$soft/$hard" ">= $rec (hard)" "$state" "$why"
}

cmd_check() {
    local entry name rule rec why cur state low=0
    printf '%-30s %-22s %-22s %-6s %s\n' SETTING CURRENT RECOMMENDED STATE WHY
    for entry in "${SETTINGS[@]}"; do
        IFS='|' read -r name rule rec why <<<"$entry"
        cur="$(read_sysctl "$name")"
        if [[ -z "$cur" ]]; then
            state="absent" cur="-"
        elif meets "$rule" "$rec" "$cur"; then
            state="ok"
        else
            state="CHANGE"
            low=$((low + 1))
        fi
        printf '%-30s %-22s %-22s %-6s %s\n' "$name" "$cur" "$(rule_word "$rule" "$rec")" "$state" "$why"
    done
    limit_line RLIMIT_NOFILE "$(ulimit -Sn)" "$(ulimit -Hn)" 1048576 \
        "open files per process (every connection is one); per process: limits.conf / systemd LimitNOFILE"
    local lsoft lhard
    lsoft="$(ulimit -Sl)" lhard="$(ulimit -Hl)"
    [[ "$lsoft" == unlimited ]] || lsoft="$((lsoft * 1024))"
    [[ "$lhard" == unlimited ]] || lhard="$((lhard * 1024))"
    limit_line RLIMIT_MEMLOCK "$lsoft" "$lhard" 67108864 \
        "locked memory, bytes; io_uring rings and registered buffers count here on kernels before 5.12"
    echo
    if ((low)); then
        echo "$low setting(s) differ from the recommendation: 'sudo scripts/tune-kernel.sh apply' sets them and 'revert' undoes it."
    else
        echo "All sysctls meet the recommendation."
    fi
}

need_root() {
    [[ $EUID -eq 0 ]] || die "'$1' writes kernel settings and needs root; run it with sudo (nothing was changed)"
}

cmd_apply() {
    need_root apply
    if [[ -e "$STATE_FILE" ]]; then
        die "settings were already applied (saved originals in $STATE_FILE); run 'scripts/tune-kernel.sh revert' first"
    fi
    local entry name rule rec why cur target
    local -a changed=() failed=() lines=()
    for entry in "${SETTINGS[@]}"; do
        IFS='|' read -r name rule rec why <<<"$entry"
        cur="$(read_sysctl "$name")"
        [[ -n "$cur" ]] || continue
        meets "$rule" "$rec" "$cur" && continue
        target="$rec"
        if [[ "$rule" == range ]]; then
            local clo chi rlo rhi
            read -r clo chi <<<"$cur"
            read -r rlo rhi <<<"$rec"
            target="$((clo < rlo ? clo : rlo)) $((chi > rhi ? chi : rhi))"
        fi
        lines+=("$name"$'\t'"$cur")
        # The originals are on disk before anything changes.
        printf '%s\n' "${lines[@]}" >"$STATE_FILE.tmp"
        mv "$STATE_FILE.tmp" "$STATE_FILE"
        if write_sysctl "$name" "$target" && [[ "$(read_sysctl "$name")" == "$target" ]]; then
            changed+=("$name: $cur -> $target")
        else
            failed+=("$name (wanted $target, still $(read_sysctl "$name"))")
            unset 'lines[-1]'
            if ((${#lines[@]})); then
                printf '%s\n' "${lines[@]}" >"$STATE_FILE.tmp"
                mv "$STATE_FILE.tmp" "$STATE_FILE"
            else
                rm -f "$STATE_FILE"
            fi
        fi
    done
    if ((${#changed[@]})); then
        echo "applied (originals saved in $STATE_FILE):"
        printf '  %s\n' "${changed[@]}"
    else
        echo "nothing changed: every writable setting already meets the recommendation"
    fi
    if ((${#failed[@]})); then
        echo "could not set (read-only /proc/sys, e.g. in a container, or a kernel without it):"
        printf '  %s\n' "${failed[@]}"
    fi
    echo "RLIMIT_NOFILE/RLIMIT_MEMLOCK are per process and were not changed; see 'check'."
}

cmd_revert() {
    need_root revert
    if [[ ! -e "$STATE_FILE" ]]; then
        echo "nothing to revert: no state file $STATE_FILE (apply was not run, or was reverted)"
        return 0
    fi
    local name old now
    local -a restored=() failed=() keep=()
    while IFS=$'\t' read -r name old; do
        [[ -n "$name" ]] || continue
        now="$(read_sysctl "$name")"
        if write_sysctl "$name" "$old" && [[ "$(read_sysctl "$name")" == "$old" ]]; then
            restored+=("$name: $now -> $old")
        else
            failed+=("$name (wanted $old, now $(read_sysctl "$name"))")
            keep+=("$name"$'\t'"$old")
        fi
    done <"$STATE_FILE"
    if ((${#restored[@]})); then
        echo "restored:"
        printf '  %s\n' "${restored[@]}"
    fi
    if ((${#failed[@]})); then
        printf '%s\n' "${keep[@]}" >"$STATE_FILE"
        echo "could not restore (kept in $STATE_FILE):"
        printf '  %s\n' "${failed[@]}"
        return 1
    fi
    rm -f "$STATE_FILE"
}

main() {
    local sub=""
    while (($#)); do
        case "$1" in
        check | apply | revert) sub="$1" ;;
        --state) STATE_FILE="${2:?--state needs a file}" && shift ;;
        -h | --help | help)
            usage
            exit 0
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
        esac
        shift
    done
    [[ -n "$sub" ]] || {
        usage >&2
        exit 2
    }
    "cmd_$sub"
}

main "$@"
