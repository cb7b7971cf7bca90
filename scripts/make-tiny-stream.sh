#!/usr/bin/env bash
# Make testdata/migration/q72-tiny-unplugged.mig: a real QEMU migration stream of a
# q35 machine with a virtio-mem device that never ran (-S), so it is small (about
# 360 KB): the RAM is zero pages, the firmware ROMs are real pages, and every
# device section, the virtio-mem device section (late layout, nothing plugged),
# EOF and the vmdesc are real QEMU output. Needs qemu-system-x86 and python3.
#
#   scripts/make-tiny-stream.sh [OUT]            16 MiB RAM, SeaBIOS (q72-tiny-unplugged.mig)
#   scripts/make-tiny-stream.sh --qboot [OUT]    2 MiB RAM, qboot firmware: about 165 KB
#                                                (q72-qboot-unplugged.mig, for every-cut tests)
set -euo pipefail
machine=(-m 16M,maxmem=80M)
default=testdata/migration/q72-tiny-unplugged.mig
if [ "${1:-}" = "--qboot" ]; then
  shift
  machine=(-m 2M,maxmem=66M -bios /usr/share/qemu/qboot.rom)
  default=testdata/migration/q72-qboot-unplugged.mig
fi
out=${1:-$default}
dir=$(mktemp -d)
trap 'kill "$(cat "$dir/qemu.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$dir"' EXIT
qemu-system-x86_64 -accel tcg -M q35 "${machine[@]}" -smp 1 -nodefaults -display none -S \
  -object memory-backend-ram,id=vmem0mem,size=64M \
  -device virtio-mem-pci,id=vmem0,memdev=vmem0mem,block-size=2M,requested-size=0 \
  -qmp "unix:$dir/qmp.sock,server=on,wait=off" -pidfile "$dir/qemu.pid" &
for _ in $(seq 50); do [ -S "$dir/qmp.sock" ] && break; sleep 0.1; done
python3 - "$dir/qmp.sock" "$dir/stream.mig" <<'PY'
import json, socket, sys, time
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
f = sock.makefile("rw")
def cmd(name, args=None):
    f.write(json.dumps({"execute": name, **({"arguments": args} if args else {})}) + "\n")
    f.flush()
    while True:
        reply = json.loads(f.readline())
        if "return" in reply or "error" in reply:
            return reply
f.readline()
cmd("qmp_capabilities")
cmd("migrate", {"uri": "exec:cat > " + sys.argv[2]})
for _ in range(100):
    status = cmd("query-migrate")["return"].get("status")
    if status in ("completed", "failed"):
        break
    time.sleep(0.1)
cmd("quit")
if status != "completed":
    sys.exit("migration " + str(status))
PY
cp "$dir/stream.mig" "$out"
sha256sum "$out"
