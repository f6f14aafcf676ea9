#!/usr/bin/env bash
# Kernel TLS end to end (issue 15), inside User-Mode Linux: this host's kernel may lack the
# `tls` ULP, Debian's UML kernel has it as a module. Boots UML (about a second; it runs this
# machine's binaries through hostfs), loads tls.ko and the AEAD modules, then for each backend
# starts ringd with a `tls = "internal"` site and, per cipher, makes one keep-alive connection
# with `curl --cacert` (the internal CA): a small file, a 10 MiB file, a Range, a 1 MiB file
# and a 404, every body compared, over TLS 1.3 (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305) and
# TLS 1.2 (AES-256-GCM, ChaCha20-Poly1305). Checks that /proc/net/tls_stat counted a TX and
# an RX kernel-TLS socket per connection and no decryption errors, that `ringd doctor` says
# the listener runs kTLS, and that `--no-ktls` keeps the records in user space. Prints
# `PASS`/`FAIL`/`SKIP` lines and a summary; exit status 0 only when every check passed, 77
# when UML or kmod is not installed.
#
# Usage: scripts/ktls-uml.sh [--ringd PATH] [--backends "epoll uring tokio-uring"]
# Needs: apt-get install user-mode-linux kmod curl (the script says so when missing).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RINGD="$REPO_ROOT/target/debug/ringd"
BACKENDS="epoll uring tokio-uring"
# Inside UML the script runs as PID 1 with the run directory as its only argument.
INSIDE=""
if [[ "${1:-}" == /* && -f "${1:-}/env" ]]; then
    INSIDE="$1"
    shift
fi
while (($#)); do
    case "$1" in
    --ringd) RINGD="$2"; shift 2 ;;
    --backends) BACKENDS="$2"; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "ktls-uml: unknown option $1" >&2; exit 2 ;;
    esac
done

# ---------------------------------------------------------------------------------------------
# Inside UML (PID 1): `ktls-uml.sh DIR`. Never exits early: PID 1 must power off.
inside() {
    set +e +o pipefail
    local dir="$1"
    # shellcheck source=/dev/null
    source "$dir/env"
    export PATH=/usr/sbin:/sbin:/usr/bin:/bin
    mount -t proc proc /proc
    mount -t sysfs sys /sys
    local res="$dir/result.txt"
    : >"$res"
    pass() { echo "PASS $*" | tee -a "$res"; }
    fail() { echo "FAIL $*" | tee -a "$res"; }
    skip() { echo "SKIP $*" | tee -a "$res"; }
    # UML's modules live outside /lib/modules: `modprobe -d` finds them through a symlink
    # farm in the run directory, and the kernel's own module requests (crypto-ghash and the
    # like, made while setting kTLS keys) go through a wrapper that says the same.
    echo "$dir/modprobe.sh" >/proc/sys/kernel/modprobe
    local m
    for m in tls gcm ghash-generic ctr chacha20poly1305 chacha_generic poly1305_generic; do
        if ! modprobe -d "$dir/mods" "$m" 2>>"$dir/modprobe.err"; then
            fail "modprobe $m: $(tail -1 "$dir/modprobe.err")"
        fi
    done
    ip link set lo up
    echo "kernel $(uname -r); tcp_available_ulp: $(cat /proc/sys/net/ipv4/tcp_available_ulp)" \
        | tee -a "$res"
    local ca="$dir/data/ca/root.pem" url="https://localhost:8443"
    stat_of() { awk -v k="$1" '$1 == k { print $2 }' /proc/net/tls_stat; }
    # Up once it says where it serves (bash builtins only: a process costs much under UML).
    wait_up() {
        local i
        for ((i = 0; i < 100; i++)); do
            if [[ "$(<"$2")" == *"serving"* ]]; then
                return 0
            fi
            if ! kill -0 "$1" 2>/dev/null; then
                return 1
            fi
            sleep 0.1
        done
        return 1
    }
    local backend pid
    for backend in $BACKENDS; do
        "$RINGD" --config "$dir/ringd.toml" --backend "$backend" \
            >"$dir/ringd-$backend.out" 2>"$dir/ringd-$backend.err" &
        pid=$!
        if ! wait_up "$pid" "$dir/ringd-$backend.out"; then
            if grep -qi "io_uring\|unsupported\|not supported" "$dir/ringd-$backend.err"; then
                skip "$backend: does not start under UML: $(tail -1 "$dir/ringd-$backend.err")"
            else
                fail "$backend: ringd did not start: $(tail -3 "$dir/ringd-$backend.err")"
            fi
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            continue
        fi
        local tx0 rx0 c t0=$SECONDS
        tx0=$(stat_of TlsTxSw)
        rx0=$(stat_of TlsRxSw)
        # name | curl options
        local cases=(
            "tls1.3-aes128|--tlsv1.3 --tls13-ciphers TLS_AES_128_GCM_SHA256"
            "tls1.3-aes256|--tlsv1.3 --tls13-ciphers TLS_AES_256_GCM_SHA384"
            "tls1.3-chacha20|--tlsv1.3 --tls13-ciphers TLS_CHACHA20_POLY1305_SHA256"
            "tls1.2-aes256|--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES256-GCM-SHA384"
            "tls1.2-chacha20|--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-CHACHA20-POLY1305"
        )
        for c in "${cases[@]}"; do
            local name="${c%%|*}" opts
            read -r -a opts <<<"${c#*|}"
            local tag="$backend $name" got
            # A process costs much under UML (every syscall is trapped): one curl makes all
            # of a case's requests, on one connection (--next keeps it): a small file, the
            # 10 MiB one, a Range, a 1 MiB file, a 404.
            local big=big.bin size="10 MiB"
            rm -f "$dir"/*.out
            local each=(-sS -m 60 --cacert "$ca" "${opts[@]}" -w '%{http_code}:%{num_connects} ')
            got=$(curl "${each[@]}" -o "$dir/small.out" "$url/small.txt" \
                --next "${each[@]}" -o "$dir/big.out" "$url/$big" \
                --next "${each[@]}" -r 1000000-1000099 -o "$dir/range.out" "$url/big.bin" \
                --next "${each[@]}" -o "$dir/mid.out" "$url/mid.bin" \
                --next "${each[@]}" -o /dev/null "$url/missing" 2>&1) || true
            if cmp -s "$dir/small.out" "$dir/www/small.txt"; then
                pass "$tag small file"
            else
                fail "$tag small file: $(head -c 200 "$dir/small.out" 2>/dev/null)"
            fi
            if cmp -s "$dir/big.out" "$dir/www/$big"; then
                pass "$tag $size file, equal"
            else
                fail "$tag $size file: $(stat -c %s "$dir/big.out" 2>/dev/null || echo none) bytes"
            fi
            if cmp -s "$dir/range.out" "$dir/range.want"; then
                pass "$tag range"
            else
                fail "$tag range"
            fi
            if [[ "$got" == "200:1 200:0 206:0 200:0 404:0 " ]] &&
                cmp -s "$dir/mid.out" "$dir/www/mid.bin"; then
                pass "$tag keep-alive (5 requests, 1 connection)"
            else
                fail "$tag keep-alive: $got"
            fi
        done
        local tx1 rx1 dec
        tx1=$(stat_of TlsTxSw)
        rx1=$(stat_of TlsRxSw)
        dec=$(stat_of TlsDecryptError)
        echo "$backend: $((SECONDS - t0)) s" | tee -a "$res"
        echo "$backend tls_stat: TlsTxSw $tx0 -> $tx1, TlsRxSw $rx0 -> $rx1, TlsDecryptError $dec" \
            | tee -a "$res"
        # 5 cases, one connection each.
        if ((tx1 - tx0 >= 5 && rx1 - rx0 >= 5)); then
            pass "$backend tls_stat counts TX and RX kTLS sockets ($((tx1 - tx0)) / $((rx1 - rx0)))"
        else
            fail "$backend tls_stat: TX $((tx1 - tx0)), RX $((rx1 - rx0)) new kTLS sockets (want >= 5)"
        fi
        if [[ "$dec" == 0 ]]; then
            pass "$backend no kTLS decryption errors"
        else
            fail "$backend TlsDecryptError $dec"
        fi
        if grep -q "kernel TLS setup failed" "$dir/ringd-$backend.err"; then
            fail "$backend: $(grep -m1 "kernel TLS setup failed" "$dir/ringd-$backend.err")"
        fi
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # `ringd doctor` names the mode; with --no-ktls the records stay in user space.
    if "$RINGD" doctor --config "$dir/ringd.toml" >"$dir/doctor.out" 2>&1 &&
        grep -q "kTLS: file bodies by sendfile/splice" "$dir/doctor.out"; then
        pass "doctor says the listener runs ktls"
    else
        fail "doctor: $(grep -i "kernel TLS\|listener" "$dir/doctor.out" | tr '\n' ' ')"
    fi
    "$RINGD" --config "$dir/ringd.toml" --backend epoll --no-ktls \
        >"$dir/ringd-noktls.out" 2>"$dir/ringd-noktls.err" &
    pid=$!
    if wait_up "$pid" "$dir/ringd-noktls.out"; then
        local tx0 tx1 got
        tx0=$(stat_of TlsTxSw)
        got=$(curl -sS -m 60 --cacert "$ca" -o "$dir/big.out" -w '%{http_code}' "$url/big.bin" 2>&1) || true
        tx1=$(stat_of TlsTxSw)
        if [[ "$got" == 200 ]] && cmp -s "$dir/big.out" "$dir/www/big.bin" && ((tx1 == tx0)); then
            pass "--no-ktls serves from user space (no new kTLS socket)"
        else
            fail "--no-ktls: status $got, TlsTxSw $tx0 -> $tx1"
        fi
    else
        fail "--no-ktls: ringd did not start: $(tail -3 "$dir/ringd-noktls.err")"
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "DONE" >>"$res"
    sync
    poweroff -f
}

if [[ -n "$INSIDE" ]]; then
    inside "$INSIDE"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# On the host.
for need in linux.uml modprobe curl cmp; do
    if ! command -v "$need" >/dev/null && [[ ! -x "/usr/sbin/$need" ]]; then
        echo "SKIP ktls-uml: $need not installed (apt-get install user-mode-linux kmod curl)"
        exit 77
    fi
done
UML_MODS=$(find /usr/lib/uml/modules -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sort | tail -1)
if [[ -z "$UML_MODS" ]]; then
    echo "SKIP ktls-uml: no /usr/lib/uml/modules/<version> (apt-get install user-mode-linux)"
    exit 77
fi
[[ -x "$RINGD" ]] || { echo "ktls-uml: no ringd at $RINGD (cargo build)" >&2; exit 2; }
RINGD="$(cd "$(dirname "$RINGD")" && pwd)/$(basename "$RINGD")"

DIR=$(mktemp -d /tmp/ringd-ktls-uml.XXXXXX)
[[ -n "${RINGD_KTLS_KEEP:-}" ]] || trap 'rm -rf "$DIR"' EXIT
mkdir -p "$DIR/www" "$DIR/data" "$DIR/mods/lib/modules"
# modprobe -d ROOT looks in ROOT/lib/modules/<uname -r>.
ln -s "$UML_MODS" "$DIR/mods/lib/modules/$(basename "$UML_MODS")"
printf '#!/bin/sh\nexec /usr/sbin/modprobe -d %q "$@"\n' "$DIR/mods" >"$DIR/modprobe.sh"
chmod +x "$DIR/modprobe.sh"
echo "hello over kernel TLS" >"$DIR/www/small.txt"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$DIR/www/big.bin"
head -c $((1024 * 1024)) /dev/urandom >"$DIR/www/mid.bin"
dd if="$DIR/www/big.bin" of="$DIR/range.want" bs=100 skip=10000 count=1 status=none
cat >"$DIR/ringd.toml" <<EOF
listen = ["127.0.0.1:8443"]
workers = 1
pin = false
data_dir = "$DIR/data"

[[sites]]
hosts = ["localhost"]
root = "$DIR/www"
tls = "internal"
EOF
{
    printf 'RINGD=%q\n' "$RINGD"
    printf 'BACKENDS=%q\n' "$BACKENDS"
    printf 'UML_MODS=%q\n' "$UML_MODS"
} >"$DIR/env"
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
# PID 1 gets no arguments from the kernel command line that we control well: a wrapper.
cat >"$DIR/init.sh" <<EOF
#!/bin/bash
exec /bin/bash "$SELF" "$DIR"
EOF
chmod +x "$DIR/init.sh"

echo "ktls-uml: booting UML ($(basename "$UML_MODS")), backends: $BACKENDS"
rc=0
timeout "${RINGD_KTLS_UML_TIMEOUT:-85}" linux.uml mem=512M root=/dev/root rootfstype=hostfs hostfs=/ rw \
    init="$DIR/init.sh" con=null con0=fd:0,fd:1 </dev/null >"$DIR/uml.log" 2>&1 || rc=$?
if [[ ! -f "$DIR/result.txt" ]]; then
    echo "FAIL ktls-uml: UML produced no result (exit $rc); its console:"
    tail -30 "$DIR/uml.log"
    exit 1
fi
cat "$DIR/result.txt"
npass=$(grep -c '^PASS' "$DIR/result.txt" || true)
nfail=$(grep -c '^FAIL' "$DIR/result.txt" || true)
nskip=$(grep -c '^SKIP' "$DIR/result.txt" || true)
if ! grep -q '^DONE' "$DIR/result.txt"; then
    echo "FAIL ktls-uml: UML stopped before the end (exit $rc); its console:"
    tail -30 "$DIR/uml.log"
    nfail=$((nfail + 1))
fi
for b in $BACKENDS; do
    if [[ -s "$DIR/ringd-$b.err" ]]; then
        echo "--- ringd $b stderr:"
        tail -5 "$DIR/ringd-$b.err"
    fi
done
echo "ktls-uml summary: $npass passed, $nfail failed, $nskip skipped"
((nfail == 0 && npass > 0))
