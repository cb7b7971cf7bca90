#!/bin/sh
# install-deps.sh - the system tools the test suite drives (run by `npm test`
# through the "pretest" script; .ci/run runs its two steps as timed phases).
#
# Usage: scripts/install-deps.sh [all | packages | vmlinux]    (default: all)
#   packages  Debian packages: QEMU 7.2, a guest kernel with virtio_mem,
#             busybox-static, cpio, zstd, binutils (readelf), gdb, crash,
#             makedumpfile, python3-drgn, file; and QEMU 10.0 from bookworm-backports in a
#             private prefix (scripts/provision-qemu10.sh; the system QEMU 7.2
#             stays untouched). Whatever version the archive has now.
#   vmlinux   the debug vmlinux of the installed guest kernel, for crash and
#             drgn (scripts/fetch-vmlinux-dbg.sh, ~860 MB download, cached in
#             /var/cache/vmemdbg).
#
# As root, missing pieces are installed (apt-get, quiet). Otherwise the script
# only says what is missing and exits 0: tests needing a missing tool are then
# skipped with a loud message - except in CI (CI=true), where they fail, and
# where a failed package installation fails this script. A missing vmlinux
# never fails it: the tests that need one fail in CI with the reason, while
# the rest of the suite still runs.
set -eu
cd "$(dirname "$0")/.."

STEP=${1:-all}
case "$STEP" in all|packages|vmlinux) ;; *) echo "usage: $0 [all|packages|vmlinux]" >&2; exit 2 ;; esac

PKGS="qemu-system-x86 linux-image-amd64 busybox-static cpio zstd binutils gdb crash makedumpfile python3-drgn file"
ci=0
case "${CI:-}" in true|1) ci=1 ;; esac

say() { echo "[install-deps] $*" >&2; }
fail_or_warn() {
    if [ "$ci" = 1 ]; then say "ERROR: $*"; exit 1; fi
    say "WARNING: $* - tests that need it will be skipped"
}

packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        fail_or_warn "not a Debian system: install the equivalents of: $PKGS"
        return 0
    fi
    missing=""
    for p in $PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = 0 ]; then
            say "installing:$missing"
            log=$(mktemp)
            if DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
                    >>"$log" 2>&1; then
                rm -f "$log"
            else
                cat "$log" >&2
                rm -f "$log"
                fail_or_warn "apt-get install failed"
            fi
        else
            fail_or_warn "missing Debian packages (run as root: apt-get install$missing)"
        fi
    fi
    if ! bash scripts/provision-qemu10.sh --print-env >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            bash scripts/provision-qemu10.sh || fail_or_warn "QEMU 10 provisioning failed"
        else
            fail_or_warn "QEMU 10 is not provisioned (run as root: scripts/provision-qemu10.sh)"
        fi
    fi
}

vmlinux() {
    sh scripts/fetch-vmlinux-dbg.sh --check >/dev/null 2>&1 && return 0
    needs="the tests that need the guest's debug symbols (tests/elf/crash_test.ts …) will"
    if [ "$(id -u)" = 0 ]; then
        sh scripts/fetch-vmlinux-dbg.sh ||
            say "WARNING: no debug vmlinux for the guest kernel: $needs $(
                [ "$ci" = 1 ] && echo fail || echo be skipped)"
    else
        say "WARNING: no debug vmlinux for the guest kernel (run as root:" \
            "sh scripts/fetch-vmlinux-dbg.sh) - $needs be skipped"
    fi
}

case "$STEP" in
    packages) packages ;;
    vmlinux) vmlinux ;;
    all) packages; vmlinux ;;
esac
exit 0
