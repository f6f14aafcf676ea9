#!/usr/bin/env bash
# Kernel TLS end to end (issue 15), inside User-Mode Linux: this host's kernel may lack the
# `tls` ULP, Debian's UML kernel has it as a module. Boots UML (about a second; it runs this
# machine's binaries through hostfs), loads tls.ko and the AEAD modules, then for each backend
# starts ringd with a `tls = "internal"` site and, per cipher, makes one keep-alive connection
# with `curl --cacert` (the internal CA): a small file, a 10 MiB file (over TLS 1.3 AES-128
# and, on the first backend, TLS 1.2 ChaCha20; 1 MiB over the other ciphers), a Range, a
# 1 MiB file and a 404, every body compared, over TLS 1.3 (AES-128-GCM, AES-256-GCM,
# ChaCha20-Poly1305) and TLS 1.2 (AES-256-GCM, ChaCha20-Poly1305). Checks that /proc/net/tls_stat counted a TX and an RX kernel-TLS socket
# per connection and no decryption errors, that a CGI script sees HTTPS=on over kTLS, that
# `ringd doctor` says the listener runs kTLS, and that `--no-ktls` keeps the records in user
# space. Prints `PASS`/`FAIL`/`SKIP` lines and a summary; exit status 0 only when every check
# passed, 77 when UML or kmod is not installed. Under heavy load (UML gets little CPU) the
# 85 s bound on UML can cut it short: that is a failure, with the console's tail.
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
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ktls-uml: unknown option $1" >&2; exit 2 ;;
    esac
done

# ---------------------------------------------------------------------------------------------
# Inside UML (PID 1): `ktls-uml.sh DIR`. Never exits early: PID 1 must power off.
inside() {
    set +eu +o pipefail
    local dir="$1"
    # shellcheck source=/dev/null
    source "$dir/env"
    export PATH=/usr/sbin:/sbin:/usr/bin:/bin
    mount -t proc proc /proc
    mount -t sysfs sys /sys
    local res="$dir/result.txt"
    : >"$res"
    # Builtins only where it can be: every process costs much under UML.
    say() {
        echo "$*"
        echo "$*" >>"$res"
    }
    pass() { say "PASS $*"; }
    fail() { say "FAIL $*"; }
    skip() { say "SKIP $*"; }
    # UML's modules live outside /lib/modules: `modprobe -d` finds them through a symlink
    # farm in the run directory, and the kernel's own module requests (crypto-ghash and the
    # like, made while setting kTLS keys) go through a wrapper that says the same.
    echo "$dir/modprobe.sh" >/proc/sys/kernel/modprobe
    if ! modprobe -a -d "$dir/mods" tls gcm ghash-generic ctr chacha20poly1305 chacha_generic \
        poly1305_generic 2>"$dir/modprobe.err"; then
        fail "modprobe: $(<"$dir/modprobe.err")"
    fi
    ip link set lo up
    # hostfs costs a host syscall per operation: the site's files and curl's output live in
    # a tmpfs inside UML (the site's root in the configs points there).
    local m="$dir/mem"
    mount -t tmpfs -o size=256m tmpfs "$m"
    cp -r "$dir/www" "$dir/range.want" "$m/"
    say "kernel $(uname -r); tcp_available_ulp: $(</proc/sys/net/ipv4/tcp_available_ulp)"
    local ca="$dir/data/ca/root.pem" url="https://localhost:8443"
    stat_of() {
        local k v
        while read -r k v; do
            [[ "$k" == "$1" ]] && echo "$v"
        done </proc/net/tls_stat
    }
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
        # A process costs much under UML (every syscall is trapped, and curl's start maps
        # its libraries through hostfs): one curl makes every request of the backend, one
        # connection per cipher (`--next` groups with equal TLS options share one): a small
        # file, the big one, a Range, a 1 MiB file, a 404. The big file is 10 MiB over TLS 1.3
        # AES-128-GCM and (on the first backend) TLS 1.2 ChaCha20-Poly1305, else 1 MiB: UML
        # gets little CPU on a loaded machine.
        local args=() big=() n=0
        rm -f "$m"/*.out
        for c in "${cases[@]}"; do
            local name="${c%%|*}" opts
            read -r -a opts <<<"${c#*|}"
            if [[ "$c" == "${cases[0]}" ||
                ("$backend" == "${BACKENDS%% *}" && "$c" == "${cases[-1]}") ]]; then
                big+=(big)
            else
                big+=(mid)
            fi
            local each=(-sS -m 60 --cacert "$ca" "${opts[@]}" -w '%{http_code}:%{num_connects} ')
            ((n++)) && args+=(--next)
            args+=("${each[@]}" -o "$m/$name.small.out" "$url/small.txt"
                --next "${each[@]}" -o "$m/$name.big.out" "$url/${big[-1]}.bin"
                --next "${each[@]}" -r 1000000-1000099 -o "$m/$name.range.out" "$url/big.bin"
                --next "${each[@]}" -o "$m/$name.mid.out" "$url/mid.bin"
                --next "${each[@]}" -o /dev/null "$url/missing")
        done
        local got
        got=$(curl "${args[@]}" 2>&1) || true
        # One sha256sum for every body (bash compares the sums).
        local -A sum=()
        local h f
        # (No process substitution: UML's devtmpfs has no /dev/fd.)
        sha256sum "$m"/*.out "$m/www/small.txt" "$m/www/big.bin" "$m/www/mid.bin" \
            "$m/range.want" >"$m/sums" 2>/dev/null
        while read -r h f; do
            sum[${f##*/}]=$h
        done <"$m/sums"
        local -a codes
        read -r -a codes <<<"$got"
        local i=0
        for c in "${cases[@]}"; do
            local name="${c%%|*}" tag="$backend ${c%%|*}" size="10 MiB" want=big.bin
            [[ "${big[i]}" == mid ]] && size="1 MiB" want=mid.bin
            check() {
                if [[ -n "${sum[$1]:-}" && "${sum[$1]:-}" == "${sum[$2]:-}" ]]; then
                    pass "$tag $3"
                else
                    fail "$tag $3: ${sum[$1]:-no body} vs ${sum[$2]:-?}"
                fi
            }
            check "$name.small.out" small.txt "small file"
            check "$name.big.out" "$want" "$size file, equal"
            check "$name.range.out" range.want range
            local run="${codes[*]:i*5:5}"
            if [[ "$run" == "200:1 200:0 206:0 200:0 404:0" &&
                "${sum[$name.mid.out]:-}" == "${sum[mid.bin]:-}" ]]; then
                pass "$tag keep-alive (5 requests, 1 connection)"
            else
                fail "$tag keep-alive: $run (curl: ${got:0:300})"
            fi
            ((i++)) || true
        done
        # The client's Finished and its request in one segment (TCP_CORK), so that one read
        # completes the handshake and brings the request: the switch comes due while the
        # tickets go out, with no later read to wake the connection. (The epoll driver once
        # waited for one here until the client gave up.)
        if [[ -x /usr/bin/python3 ]]; then
            got=$(timeout 20 /usr/bin/python3 "$dir/corked.py" "$ca" 2>&1)
            if [[ "$got" == "HTTP/1.1 200 OK"* ]]; then
                pass "$backend Finished and request in one segment"
            else
                fail "$backend Finished and request in one segment: ${got:0:300}"
            fi
        else
            skip "$backend Finished and request in one segment: no /usr/bin/python3"
        fi
        local tx1 rx1 dec
        tx1=$(stat_of TlsTxSw)
        rx1=$(stat_of TlsRxSw)
        dec=$(stat_of TlsDecryptError)
        say "$backend: $((SECONDS - t0)) s"
        say "$backend tls_stat: TlsTxSw $tx0 -> $tx1, TlsRxSw $rx0 -> $rx1, TlsDecryptError $dec"
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
        if [[ "$(<"$dir/ringd-$backend.err")" == *"kernel TLS setup failed"* ]]; then
            fail "$backend: kernel TLS setup failed: $(<"$dir/ringd-$backend.err")"
        fi
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # After the switch the connection still knows it is HTTPS: a CGI script (epoll runs
    # CGI) sees HTTPS=on on a kTLS connection.
    "$RINGD" --config "$dir/cgi.toml" --backend epoll \
        >"$dir/ringd-cgi.out" 2>"$dir/ringd-cgi.err" &
    pid=$!
    if wait_up "$pid" "$dir/ringd-cgi.out"; then
        local tx0 tx1 got
        tx0=$(stat_of TlsTxSw)
        got=$(curl -sS -m 20 --cacert "$ca" "$url/cgi-bin/scheme.sh" 2>&1) || true
        tx1=$(stat_of TlsTxSw)
        if [[ "$got" == "HTTPS=on" ]] && ((tx1 == tx0 + 1)); then
            pass "CGI sees HTTPS=on on a kTLS connection"
        else
            fail "CGI over kTLS: '$got', TlsTxSw $tx0 -> $tx1"
        fi
    else
        fail "cgi: ringd did not start: $(tail -3 "$dir/ringd-cgi.err")"
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
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
        got=$(curl -sS -m 60 --cacert "$ca" -o "$m/mid.out" -w '%{http_code}' "$url/mid.bin" 2>&1) || true
        tx1=$(stat_of TlsTxSw)
        if [[ "$got" == 200 ]] && cmp -s "$m/mid.out" "$m/www/mid.bin" && ((tx1 == tx0)); then
            pass "--no-ktls serves from user space (no new kTLS socket)"
        else
            fail "--no-ktls: status $got, TlsTxSw $tx0 -> $tx1"
        fi
    else
        fail "--no-ktls: ringd did not start: $(tail -3 "$dir/ringd-noktls.err")"
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    say "total in UML: $SECONDS s"
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
mkdir -p "$DIR/www" "$DIR/mem" "$DIR/data" "$DIR/mods/lib/modules"
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
root = "$DIR/mem/www"
tls = "internal"
EOF
{
    cat "$DIR/ringd.toml"
    printf '[[sites.routes]]\npath = "/cgi-bin/*"\ncgi = { dir = "%s" }\n' "$DIR/cgi"
} >"$DIR/cgi.toml"
cat >"$DIR/corked.py" <<'EOF'
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
s = socket.create_connection(("127.0.0.1", 8443), timeout=15)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
t = ctx.wrap_socket(s, server_hostname="localhost")
t.sendall(b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
t.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
got = b""
while True:
    try:
        b = t.recv(65536)
    except (ssl.SSLEOFError, ConnectionResetError):
        break
    if not b:
        break
    got += b
print(got.decode("latin-1"))
EOF
mkdir -p "$DIR/cgi"
printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nHTTPS=%%s" "$HTTPS"\n' >"$DIR/cgi/scheme.sh"
chmod +x "$DIR/cgi/scheme.sh"
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
