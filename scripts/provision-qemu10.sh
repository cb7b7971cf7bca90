#!/bin/bash
# provision-qemu10.sh - make QEMU 10.0 (Debian bookworm-backports) runnable
# from a private prefix without installing it over the system QEMU 7.2.
#
# Usage: scripts/provision-qemu10.sh [PREFIX]
#   PREFIX defaults to $VMEM_QEMU10_PREFIX or /var/cache/vmemfix/qemu10 (the
#   same place shared/realdata/make-fixtures.sh uses, so either tool reuses
#   the other's copy).
#
# Steps (root, Debian 12):
#   1. if PREFIX/usr/bin/qemu-system-x86_64 already reports version 10.x: done;
#   2. write a temporary deb822 source for bookworm-backports and refresh the
#      package lists of that source only;
#   3. `apt-get download` qemu-system-x86, qemu-system-common,
#      qemu-system-data and seabios from bookworm-backports, plus every lib*
#      dependency whose installed version is missing or too old;
#   4. unpack all of them with `dpkg -x` into PREFIX.tmp, then rename to PREFIX;
#   5. remove the temporary source (and its lists, unless they were there
#      before) - also when a step fails (EXIT trap).
#
# Running the result needs LD_LIBRARY_PATH, QEMU_MODULE_DIR and -L options;
# tests/_util/qemu_binary.ts (qemuBinary("10")) sets them. Print them with
#   scripts/provision-qemu10.sh --print-env
set -euo pipefail

PRINT_ENV=0
if [ "${1:-}" = "--print-env" ]; then PRINT_ENV=1; shift; fi
PREFIX=${1:-${VMEM_QEMU10_PREFIX:-/var/cache/vmemfix/qemu10}}
mkdir -p "$(dirname "$PREFIX")"
PREFIX=$(cd "$(dirname "$PREFIX")" && pwd)/$(basename "$PREFIX")
BIN=$PREFIX/usr/bin/qemu-system-x86_64
LIBS=$PREFIX/usr/lib/x86_64-linux-gnu:$PREFIX/lib/x86_64-linux-gnu
MODS=$PREFIX/usr/lib/x86_64-linux-gnu/qemu

say() { echo "[provision-qemu10] $*" >&2; }

run_prefixed() {
    LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" QEMU_MODULE_DIR="$MODS" "$@"
}

works() {
    [ -x "$BIN" ] && run_prefixed timeout 20 "$BIN" --version 2>/dev/null | grep -q '^QEMU emulator version 10\.'
}

if [ "$PRINT_ENV" = 1 ]; then
    works || { say "not provisioned in $PREFIX"; exit 1; }
    echo "QEMU10_BIN=$BIN"
    echo "LD_LIBRARY_PATH=$LIBS"
    echo "QEMU_MODULE_DIR=$MODS"
    echo "QEMU10_ARGS=-L $PREFIX/usr/share/qemu -L $PREFIX/usr/share/seabios"
    exit 0
fi

if works; then
    say "already provisioned: $(run_prefixed "$BIN" --version | head -1) in $PREFIX"
    exit 0
fi
[ "$(id -u)" = 0 ] || { say "needs root (apt-get, $PREFIX)"; exit 1; }

SRC=/etc/apt/sources.list.d/vmem-dump-tmp-bookworm-backports.sources
LISTS_EXISTED=$(ls /var/lib/apt/lists/ 2>/dev/null | grep -c '_dists_bookworm-backports_' || true)
DL=""
cleanup() {
    rm -f "$SRC"
    if [ "$LISTS_EXISTED" = 0 ]; then rm -f /var/lib/apt/lists/*_dists_bookworm-backports_*; fi
    [ -n "$DL" ] && rm -rf "$DL"
    rm -rf "$PREFIX.tmp"
}
trap cleanup EXIT

cat > "$SRC" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
say "refreshing package lists of bookworm-backports only"
timeout 600 apt-get -qq update -o Dir::Etc::sourcelist="$SRC" -o Dir::Etc::sourceparts=- \
    -o APT::Get::List-Cleanup=0 >&2

DL=$(mktemp -d /tmp/vmem-q10dl.XXXXXX)
chmod 755 "$DL"
chown _apt "$DL" 2>/dev/null || true   # apt downloads as the _apt user
cd "$DL"
say "downloading QEMU 10 packages"
timeout 600 apt-get -qq download qemu-system-x86/bookworm-backports \
    qemu-system-common/bookworm-backports qemu-system-data/bookworm-backports \
    seabios/bookworm-backports >&2

# library dependencies that the installed system does not satisfy
need=""
for deb in qemu-system-x86_*.deb qemu-system-common_*.deb; do
    while IFS= read -r alt; do
        alt=${alt%%|*}                       # first alternative only
        pkg=$(awk '{print $1}' <<<"$alt")
        pkg=${pkg%%:*}
        case "$pkg" in lib*|zlib*) ;; *) continue ;; esac
        rel=$(sed -n 's/.*(\s*\([<>=]*\)\s*\([^)]*\)).*/\1 \2/p' <<<"$alt")
        have=$(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null |
            sed -n 's/^install ok installed //p')
        if [ -z "$have" ]; then
            need="$need $pkg"
        elif [ -n "$rel" ] && ! dpkg --compare-versions "$have" ${rel% *} "${rel#* }"; then
            need="$need $pkg"
        fi
    done < <(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/^ *//')
done
for pkg in $need; do
    say "library $pkg is missing or too old: adding it to the prefix"
    timeout 300 apt-get -qq download "$pkg/bookworm-backports" >&2 2>/dev/null ||
        timeout 300 apt-get -qq download "$pkg" >&2
done

say "downloaded $(ls ./*.deb | wc -l) packages, $(du -cm ./*.deb | tail -n 1 | cut -f1) MB"
rm -rf "$PREFIX.tmp"
mkdir -p "$PREFIX.tmp"
for deb in ./*.deb; do dpkg -x "$deb" "$PREFIX.tmp"; done
ls ./*.deb | sed 's#^\./##' > "$PREFIX.tmp/DEBS.txt"
rm -rf "$PREFIX"
mv "$PREFIX.tmp" "$PREFIX"
cd /
works || { say "QEMU in $PREFIX does not run:"; run_prefixed "$BIN" --version >&2 || true; exit 1; }
say "provisioned $(run_prefixed "$BIN" --version | head -1) in $PREFIX ($(du -sh "$PREFIX" | cut -f1))"
