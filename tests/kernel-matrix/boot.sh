#!/bin/sh
# boot.sh VMLINUZ INITRD OUT_DIR TIMEOUT_SECONDS
#
# Boots one kernel with the matrix initramfs under qemu (TCG: no KVM here), one CPU, 1 GiB, no
# network device. The kernel console (ttyS0) goes to OUT_DIR/console.log, the loader's output
# (ttyS1) to OUT_DIR/loader.log. The guest powers itself off; qemu is killed after
# TIMEOUT_SECONDS otherwise. Exit status: qemu's, or 124 on timeout.
set -eu

vmlinuz=$1
initrd=$2
out=$3
limit=$4
mkdir -p "$out"
rm -f "$out/console.log" "$out/loader.log"

exec timeout -k 5 "$limit" qemu-system-x86_64 \
	-accel tcg -cpu max -m 1024 -smp 1 \
	-display none -monitor none -no-reboot -nic none \
	-serial "file:$out/console.log" -serial "file:$out/loader.log" \
	-kernel "$vmlinuz" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 quiet loglevel=3"
