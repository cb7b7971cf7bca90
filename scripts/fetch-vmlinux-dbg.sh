#!/bin/sh
# fetch-vmlinux-dbg.sh - the debug vmlinux of the real fixtures' guest kernel,
# for tests/elf/crash_test.ts (the `crash` utility needs it).
#
# Usage: scripts/fetch-vmlinux-dbg.sh [--check | --print-path]
#   (no option)   make sure CACHE/usr/lib/debug/boot/vmlinux-ABI exists: skip
#                 when it is there for the right package version, otherwise
#                 `apt-get download` linux-image-ABI-dbg=VERSION and extract only
#                 the vmlinux (the rest of the 858 MB package is not unpacked)
#   --check       exit 0 when the vmlinux is there, 1 otherwise (no download)
#   --print-path  print the vmlinux path (whether or not it exists)
#
# The kernel comes from the fixtures' manifest (shared/realdata/out-small/
# manifest.json: key "kernel" = "vmlinuz-ABI", and "linux-image-ABI=VERSION" in
# "debian_packages"); without a manifest, from the installed linux-image-amd64.
# The vmlinux must be the one the fixtures' guest booted, so there is no
# fallback to another version: when apt cannot get the exact package, the
# script fails and writes the reason to CACHE/FAILED-vmlinux-ABI.txt, which
# the test shows in its failure message.
#
# Environment: VMEMDBG_CACHE (default /var/cache/vmemdbg), VMEM_SHARED (the
# shared folder or its realdata subfolder; default ../shared/realdata beside
# the checkout). Needs root for apt-get update and the default cache folder.
# Output: CACHE/usr/lib/debug/boot/vmlinux-ABI plus CACHE/vmlinux-ABI.version
# (the package version it came from). The file appears only when complete.
set -eu
cd "$(dirname "$0")/.."

MODE=fetch
case "${1:-}" in
    "") ;;
    --check) MODE=check ;;
    --print-path) MODE=print ;;
    *) echo "usage: $0 [--check | --print-path]" >&2; exit 2 ;;
esac

CACHE=${VMEMDBG_CACHE:-/var/cache/vmemdbg}
say() { echo "[fetch-vmlinux-dbg] $*" >&2; }

# ------------------------------------------------------------- which kernel
manifest=""
if [ -n "${VMEM_SHARED:-}" ]; then
    for m in "$VMEM_SHARED/realdata/out-small/manifest.json" "$VMEM_SHARED/out-small/manifest.json"; do
        if [ -f "$m" ]; then manifest=$m; break; fi
    done
elif [ -f ../shared/realdata/out-small/manifest.json ]; then
    manifest=../shared/realdata/out-small/manifest.json
fi

abi=""
version=""
if [ -n "$manifest" ]; then
    abi=$(sed -n 's/.*"kernel": *"vmlinuz-\([^"]*\)".*/\1/p' "$manifest" | head -n 1)
    if [ -n "$abi" ]; then
        abi_re=$(printf '%s' "$abi" | sed 's/[.]/[.]/g')
        version=$(sed -n "s/.*\"linux-image-$abi_re=\\([^\"]*\\)\".*/\\1/p" "$manifest" | head -n 1)
    fi
    [ -n "$abi" ] && [ -n "$version" ] ||
        { say "ERROR: $manifest names no kernel (\"kernel\" and \"linux-image-ABI=VERSION\")"; exit 1; }
fi
# The installed meta-package: "linux-image-6.1.0-56-amd64 (= 6.1.192-2)".
installed=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null |
    sed -n 's/^linux-image-\([^ ,]*\) (= \([^)]*\)).*/\1=\2/p') || true
if [ -z "$abi" ]; then
    if [ -z "$installed" ]; then
        say "ERROR: no fixture manifest (set VMEM_SHARED) and no linux-image-amd64 installed"
        exit 1
    fi
    abi=${installed%%=*}
    version=${installed#*=}
    say "no fixture manifest: using the installed linux-image-amd64 ($abi $version)"
elif [ -n "$installed" ] && [ "$installed" != "$abi=$version" ]; then
    say "note: the fixtures' guest kernel is $abi $version, the installed linux-image-amd64" \
        "is ${installed%%=*} ${installed#*=}; fetching the fixtures' one"
fi

TARGET=$CACHE/usr/lib/debug/boot/vmlinux-$abi
STAMP=$CACHE/vmlinux-$abi.version
FAILED=$CACHE/FAILED-vmlinux-$abi.txt
PKG=linux-image-$abi-dbg

present() {
    [ -s "$TARGET" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$version" ]
}

case $MODE in
    print) echo "$TARGET"; exit 0 ;;
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

failed() {
    say "ERROR: $*"
    { echo "$(date -u +%FT%TZ) scripts/fetch-vmlinux-dbg.sh: $*"; } >"$FAILED" 2>/dev/null || true
    exit 1
}

deb_name="${PKG}_${version}_amd64.deb"
if [ -f "$CACHE/$deb_name" ] && dpkg-deb --info "$CACHE/$deb_name" >/dev/null 2>&1; then
    deb=$CACHE/$deb_name # left there by hand or by an older run: reuse, keep
    say "using $deb"
else
    # apt drops privileges to _apt for downloads: let it write the folder
    if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
    t0=$(date +%s)
    if ! (cd "$tmp" && apt-get download -qq "$PKG=$version") >"$tmp/apt.log" 2>&1; then
        say "$PKG=$version not downloadable yet: refreshing the package lists"
        if [ "$(id -u)" = 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$tmp/apt.log" 2>&1 || true
        fi
        if ! (cd "$tmp" && apt-get download -qq "$PKG=$version") >>"$tmp/apt.log" 2>&1; then
            cat "$tmp/apt.log" >&2
            failed "$PKG=$version is not available from the apt sources" \
                "(apt-cache policy $PKG: $(apt-cache policy "$PKG" 2>/dev/null | sed -n 's/^ *Candidate: //p' | head -n 1)). It is the" \
                "debug kernel of the fixtures' guest ($manifest); Debian drops an old kernel ABI's" \
                "packages once a newer one is published. Fetch $deb_name from" \
                "https://snapshot.debian.org/package/linux/$version/ and put it in $CACHE," \
                "or set VMEM_VMLINUX to that kernel's vmlinux."
        fi
    fi
    deb=$tmp/$deb_name
    [ -f "$deb" ] || failed "apt-get download did not produce $deb_name"
    say "downloaded $deb_name ($(du -m "$deb" | cut -f1) MB) in $(($(date +%s) - t0)) s"
fi

# Only the vmlinux: it is the 11th member of data.tar, so --occurrence lets tar
# stop right after it instead of decompressing every module (75 s -> ~10 s).
# dpkg-deb then dies of SIGPIPE, which is expected: tar's status is the one
# that counts.
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
