#!/bin/sh
# build.sh OUT_DIR
#
# Builds the matrix tools into OUT_DIR:
#   kmatrix-loader   loader.c linked statically against Debian's libbpf.a, libelf.a and libz.a,
#                    so the same binary runs on the host and inside the busybox initramfs
#   probes.bpf.o     probes.bpf.c: the empty capture-path probes (needs no vmlinux.h)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$1
mkdir -p "$out"
for lib in libbpf.a libelf.a libz.a; do
	[ -f "/usr/lib/x86_64-linux-gnu/$lib" ] ||
		{ echo "build.sh: /usr/lib/x86_64-linux-gnu/$lib missing (apt-get install libbpf-dev libelf-dev zlib1g-dev)" >&2; exit 2; }
done
gcc -static -O2 -Wall -Wextra -Werror -o "$out/kmatrix-loader" "$here/loader.c" -lbpf -lelf -lz
clang=${BPF_CLANG:-clang-14}
"$clang" -g -O2 -Wall -Werror -target bpf -I/usr/include/x86_64-linux-gnu -c "$here/probes.bpf.c" -o "$out/probes.bpf.o"
