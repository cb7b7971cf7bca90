#!/bin/sh
# fetch-vmlinux-dbg.sh - the debug vmlinux of the kernel the Linux test guest
# boots, for the tests that need the guest's debug symbols (crash; drgn).
#
# Usage: scripts/fetch-vmlinux-dbg.sh [--check | --print-path | --print-abi]
#   (no option)   make sure CACHE/usr/lib/debug/boot/vmlinux-ABI exists: skip
#                 when it is there for the installed package version, otherwise
#                 `apt-get download` linux-image-ABI-dbg=VERSION (~860 MB) and
#                 extract only the vmlinux (~630 MB); the .deb is not kept
#   --check       exit 0 when the vmlinux is there, 1 otherwise (no download)
#   --print-path  print the vmlinux path (whether or not it exists)
#   --print-abi   print ABI and VERSION of the guest kernel
#
# The guest kernel is the newest /boot/vmlinuz-ABI whose modules include
# virtio_mem (the rule of tests/_util/guest.ts), i.e. the kernel installed on
# this machine now; VERSION is its installed Debian package version. Debian
# serves the -dbg package of the current kernel; it drops an ABI's packages
# when a newer kernel is published. So when the exact package cannot be
# downloaded even after `apt-get update`, the installed kernel is no longer
# current: as root the script then upgrades linux-image-amd64 (the guest boots
# the newest kernel, so tests follow) and fetches the debug package of the new
# kernel. Nothing here names a kernel version: the tests' dumps are made in the
# test from this kernel (tests/_util/kernel_dumps.ts), never from fixtures.
# When it still fails, the reason goes to CACHE/FAILED-vmlinux-ABI.txt, which
# the tests show in their failure message.
#
# Environment: VMEMDBG_CACHE (default /var/cache/vmemdbg). Needs root for
# apt-get update/install and the default cache folder.
# Output: CACHE/usr/lib/debug/boot/vmlinux-ABI plus CACHE/vmlinux-ABI.version
# (the package version it came from). The file appears only when complete.
set -eu
cd "$(dirname "$0")/.."

MODE=fetch
case "${1:-}" in
    "") ;;
    --check) MODE=check ;;
    --print-path) MODE=print ;;
    --print-abi) MODE=abi ;;
    *) echo "usage: $0 [--check | --print-path | --print-abi]" >&2; exit 2 ;;
esac

CACHE=${VMEMDBG_CACHE:-/var/cache/vmemdbg}
say() { echo "[fetch-vmlinux-dbg] $*" >&2; }

# ------------------------------------------------------------- which kernel
# Sets abi and version: the newest installed kernel with a virtio_mem module.
guest_kernel() {
    abi=""
    for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sed 's#.*/vmlinuz-##' | sort -V -r); do
        if grep -q '/virtio_mem\.ko[.a-z]*:' "/lib/modules/$k/modules.dep" 2>/dev/null; then
            abi=$k
            break
        fi
    done
    [ -n "$abi" ] || { say "ERROR: no kernel with a virtio_mem module in /boot (apt-get install linux-image-amd64)"; exit 1; }
    version=$(dpkg-query -W -f='${Version}' "linux-image-$abi" 2>/dev/null) || version=""
    [ -n "$version" ] || { say "ERROR: /boot/vmlinuz-$abi is not from a Debian package linux-image-$abi"; exit 1; }
}
guest_kernel

set_paths() {
    TARGET=$CACHE/usr/lib/debug/boot/vmlinux-$abi
    STAMP=$CACHE/vmlinux-$abi.version
    FAILED=$CACHE/FAILED-vmlinux-$abi.txt
    PKG=linux-image-$abi-dbg
}
set_paths

present() {
    [ -s "$TARGET" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$version" ]
}

case $MODE in
    print) echo "$TARGET"; exit 0 ;;
    abi) echo "$abi $version"; exit 0 ;;
    check)
        if present; then echo "$TARGET"; exit 0; fi
        say "missing: $TARGET ($PKG $version)"
        exit 1
        ;;
esac

if present; then
    say "already there: $TARGET ($PKG $version)"
    exit 0
fi

# ------------------------------------------------------------------ fetch
mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/.tmp-fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
# apt drops privileges to _apt for downloads: let it write the folder
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi

failed() {
    say "ERROR: $*"
    { echo "$(date -u +%FT%TZ) scripts/fetch-vmlinux-dbg.sh: $*"; } >"$FAILED" 2>/dev/null || true
    exit 1
}

download() { # -> 0 when $tmp/$PKG_$version_amd64.deb is there
    (cd "$tmp" && apt-get download -qq "$PKG=$version") >>"$tmp/apt.log" 2>&1
}

t0=$(date +%s)
if ! download; then
    say "$PKG=$version not downloadable: refreshing the package lists"
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$tmp/apt.log" 2>&1 || true
    fi
    if ! download; then
        if [ "$(id -u)" != 0 ]; then
            cat "$tmp/apt.log" >&2
            failed "$PKG=$version is not available from the apt sources and upgrading" \
                "the kernel needs root. Run as root: apt-get install linux-image-amd64 &&" \
                "sh scripts/fetch-vmlinux-dbg.sh, or set VMEM_VMLINUX."
        fi
        # The installed kernel is no longer the archive's current one.
        old="$abi $version"
        say "$PKG=$version is not served any more: upgrading linux-image-amd64 to the current kernel"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            linux-image-amd64 >>"$tmp/apt.log" 2>&1 || true
        guest_kernel
        set_paths
        if [ "$abi $version" = "$old" ]; then
            cat "$tmp/apt.log" >&2
            failed "$PKG=$version is not available from the apt sources" \
                "(apt-cache policy $PKG: candidate" \
                "$(apt-cache policy "$PKG" 2>/dev/null | sed -n 's/^ *Candidate: //p' | head -n 1))," \
                "and linux-image-amd64 offers no newer kernel. Set VMEM_VMLINUX to the vmlinux" \
                "of /boot/vmlinuz-$abi."
        fi
        say "the guest kernel is now $abi $version"
        if present; then
            say "already there: $TARGET ($PKG $version)"
            exit 0
        fi
        download || { cat "$tmp/apt.log" >&2; failed "$PKG=$version is not available from the apt sources"; }
    fi
fi
deb_name="${PKG}_${version}_amd64.deb"
deb=$(ls "$tmp"/*.deb 2>/dev/null | head -n 1) || true
[ -n "$deb" ] && [ -f "$deb" ] || failed "apt-get download did not produce $deb_name"
say "downloaded $(basename "$deb") ($(du -m "$deb" | cut -f1) MB) in $(($(date +%s) - t0)) s"

# Only the vmlinux: it is an early member of data.tar, so --occurrence lets
# tar stop right after it instead of decompressing every module (75 s -> ~10
# s). dpkg-deb then dies of SIGPIPE, which is expected: tar's status is the
# one that counts.
t0=$(date +%s)
member=./usr/lib/debug/boot/vmlinux-$abi
mkdir -p "$tmp/x"
status=$({ dpkg-deb --fsys-tarfile "$deb" 2>/dev/null || true; } |
    { tar -x -C "$tmp/x" --occurrence=1 "$member" >&2; echo $?; }) || true
[ "$status" = 0 ] && [ -s "$tmp/x/$member" ] ||
    failed "$deb_name has no $member (tar status $status)"
mkdir -p "$(dirname "$TARGET")"
mv -f "$tmp/x/$member" "$TARGET"
echo "$version" >"$STAMP"
rm -f "$FAILED"
say "extracted $TARGET ($(du -m "$TARGET" | cut -f1) MB) in $(($(date +%s) - t0)) s"
