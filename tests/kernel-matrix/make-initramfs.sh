#!/bin/sh
# make-initramfs.sh OUT.cpio LOADER OBJ_DIR MODULE_DIR [LOADER_ARGS...]
#
# Builds an uncompressed initramfs (newc cpio) for one matrix boot:
#   /bin/busybox (busybox-static) and its applets, /dev/console,
#   /kmatrix/kmatrix-loader, /kmatrix/obj/*.o (the BPF objects), /kmatrix/modules/*.ko (tc),
#   /init: mounts proc, sysfs, devtmpfs, bpffs, tracefs, securityfs, cgroup2 and /run, brings lo
#   up, loads the tc modules, runs the loader with LOADER_ARGS (object paths relative to
#   /kmatrix/obj) with its output on the second serial port (/dev/ttyS1, free of kernel
#   messages), then powers off.
# Uncompressed on purpose: the kernel copies it in no time, while decompressing under TCG costs.
set -eu

out=$1
loader=$2
objdir=$3
moddir=$4
shift 4

busybox=$(command -v busybox || true)
[ -x /bin/busybox ] && busybox=/bin/busybox
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' ||
	{ echo "make-initramfs: need a static busybox (apt-get install busybox-static)" >&2; exit 2; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/run" "$root/tmp" "$root/etc" \
	"$root/kmatrix/obj" "$root/kmatrix/modules"
cp "$busybox" "$root/bin/busybox"
mknod -m 600 "$root/dev/console" c 5 1
cp "$loader" "$root/kmatrix/kmatrix-loader"
cp "$objdir"/*.o "$root/kmatrix/obj/"
if [ -d "$moddir" ]; then
	for m in "$moddir"/*.ko; do
		[ -f "$m" ] && cp "$m" "$root/kmatrix/modules/"
	done
fi
echo "kmatrix" >"$root/etc/hostname"

# Loader arguments, one per line (no word splitting surprises in the init script).
: >"$root/kmatrix/args"
for a in "$@"; do
	printf '%s\n' "$a" >>"$root/kmatrix/args"
done

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t securityfs securityfs /sys/kernel/security
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs run /run
ip link set lo up
out=/dev/ttyS1
[ -c $out ] || out=/dev/console
for m in sch_ingress cls_bpf; do
	[ -f /kmatrix/modules/$m.ko ] || continue
	if insmod /kmatrix/modules/$m.ko 2>/tmp/insmod.err; then
		echo "FACT module_$m loaded" >$out
	else
		echo "FACT module_$m failed:$(tr ' \n' '__' </tmp/insmod.err)" >$out
	fi
done
cd /kmatrix/obj
set --
while IFS= read -r a; do set -- "$@" "$a"; done </kmatrix/args
/kmatrix/kmatrix-loader "$@" >$out 2>&1
echo "EXIT $?" >$out
sync
poweroff -f
EOF
chmod 755 "$root/init"

(cd "$root" && find . | sort | cpio -o -H newc --quiet) >"$out.tmp"
mv "$out.tmp" "$out"
