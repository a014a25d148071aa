#!/bin/sh
# fetch-kernels.sh CACHE_DIR SERIES...
#
# Makes Debian's cloud kernels of each SERIES (e.g. 6.1 6.12) ready to boot under qemu, cached in
# CACHE_DIR (the repo's gitignored .cache/kernels/; kernels never go into git):
#
#   CACHE_DIR/<package>.deb                 the package as apt-get download fetched it
#   CACHE_DIR/<release>/vmlinuz             the kernel image
#   CACHE_DIR/<release>/config              its build configuration
#   CACHE_DIR/<release>/modules/*.ko        sch_ingress and cls_bpf (tc), decompressed
#
# The newest package apt knows for a series is used; once a release is extracted it is reused
# without asking apt again (CI caches the folder). Prints one line per series on stdout:
#   KERNEL <series> <release> <dir>
# and exits non-zero with a message on stderr when a series can be neither found in the cache nor
# downloaded: the matrix must fail loudly, never pass without its kernels.
set -eu

cache=$1
shift
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

fail() {
	echo "fetch-kernels: $*" >&2
	exit 2
}

# Release patterns per series; the package is linux-image-<release>-unsigned (cloud flavour:
# small, BTF built in, kprobes, fentry, BPF LSM).
pattern() {
	case $1 in
	6.1) echo '^6\.1\.0-[0-9]+-cloud-amd64$' ;;
	6.12) echo '^6\.12\.[0-9]+\+deb12-cloud-amd64$' ;;
	*) fail "unknown series $1 (known: 6.1 6.12)" ;;
	esac
}

# The release string of a package (linux-image-<release>-unsigned → <release>).
release_of() {
	echo "$1" | sed -e 's/^linux-image-//' -e 's/-unsigned$//'
}

extract() { # extract DEB RELEASE
	deb=$1
	rel=$2
	tmp=$(mktemp -d "$cache/.extract.XXXXXX")
	dpkg-deb -x "$deb" "$tmp" || fail "dpkg-deb -x $deb failed"
	out="$cache/$rel"
	rm -rf "$out.new"
	mkdir -p "$out.new/modules"
	cp "$tmp/boot/vmlinuz-$rel" "$out.new/vmlinuz" || fail "no boot/vmlinuz-$rel in $deb"
	cp "$tmp/boot/config-$rel" "$out.new/config"
	for m in sch_ingress cls_bpf; do
		f=$(find "$tmp/lib/modules/$rel" -name "$m.ko*" | head -n 1)
		[ -n "$f" ] || fail "module $m not found in $deb"
		case $f in
		*.xz) xz -dc "$f" >"$out.new/modules/$m.ko" ;;
		*.zst) zstd -qdc "$f" >"$out.new/modules/$m.ko" ;;
		*.gz) gzip -dc "$f" >"$out.new/modules/$m.ko" ;;
		*) cp "$f" "$out.new/modules/$m.ko" ;;
		esac
	done
	rm -rf "$tmp"
	rm -rf "$out"
	mv "$out.new" "$out"
}

# Every cloud kernel release apt knows (empty when apt has no lists, e.g. offline CI).
known=$(apt-cache search --names-only 'linux-image-.*-cloud-amd64-unsigned' 2>/dev/null |
	awk '{print $1}' | while read -r p; do release_of "$p"; done || true)

for series in "$@"; do
	pat=$(pattern "$series")
	rel=$(echo "$known" | grep -E "$pat" | sort -V | tail -n 1 || true)
	if [ -z "$rel" ]; then
		# No apt: fall back to the newest release already extracted in the cache.
		rel=$(ls "$cache" 2>/dev/null | grep -E "$pat" | sort -V | tail -n 1 || true)
		[ -n "$rel" ] && [ -f "$cache/$rel/vmlinuz" ] ||
			fail "no Debian cloud kernel package for $series: apt-cache finds none and $cache holds none (run apt-get update, or restore the CI cache)"
		echo "KERNEL $series $rel $cache/$rel"
		continue
	fi
	pkg="linux-image-$rel-unsigned"
	if [ ! -f "$cache/$rel/vmlinuz" ] || [ ! -f "$cache/$rel/modules/cls_bpf.ko" ]; then
		deb=$(ls "$cache/${pkg}"_*.deb 2>/dev/null | head -n 1 || true)
		if [ -z "$deb" ]; then
			(cd "$cache" && apt-get download "$pkg" >"$cache/.download.log" 2>&1) ||
				fail "apt-get download $pkg failed: $(tail -n 3 "$cache/.download.log" | tr '\n' ' ')"
			deb=$(ls "$cache/${pkg}"_*.deb | head -n 1)
		fi
		extract "$deb" "$rel"
	fi
	echo "KERNEL $series $rel $cache/$rel"
done
