// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * kmatrix-loader: proves BPF objects on the running kernel, for the FlowSec kernel matrix.
 *
 * For each unit given on the command line it opens and loads a BPF object (or a chosen subset of
 * its programs), attaches every program, makes the hooks fire (a loopback TCP connection, and one
 * held open until the maps are dumped, a DNS
 * query and answer over UDP port 53 and over TCP, an exec, an exit, opens/creates/renames/unlinks of a watched
 * path, a refused TCP connection and a UDP datagram to a closed port, both dropped by the
 * kernel), then dumps what the programs left: ring-buffer records, hash-map entries, per-CPU
 * counters, and each program's verified instruction count and run count.
 *
 * Built statically (gcc -static ... -lbpf -lelf -lz) so the same binary runs on the host and in a
 * busybox initramfs under qemu. Output is one fact per line on stdout, for a test to parse:
 *
 *   FACT <name> <value>                       kernel facts (release, BTF, kprobes, kfuncs, LSMs) and
 *                                             the loader's own (pid, comm, cgroup_id)
 *   ENUM skb_drop_reason <name> <value>       the running kernel's drop reason numbering
 *   UNIT <unit> object=<path> mode=<all|each>
 *   FIRE <unit> <signal> key=value...         what the triggers did (ports, pids, paths, results)
 *   PROG <unit> <prog> section=<s> load=ok|fail:<E> attach=ok|skip:<why>|fail:<E>
 *        xlated=<n> verified=<n> jited=<n> run_cnt=<n> run_ns=<n>
 *   VLOG <unit> <prog> <line>                 verifier/libbpf log tail of a failed load
 *   RECORD <unit> <map> <hex>                 one ring-buffer record
 *   ENTRY <unit> <map> <key hex> <value hex>  one hash-map entry
 *   COUNTER <unit> <map> <index> <sum>        per-CPU array slot summed over CPUs
 *   COST <unit> <prog> signal=<s> iters=<n> attached_ns=<ns/op> baseline_ns=<ns/op>
 *   NOISE <unit> <signal> iters=<n> a_ns=<ns/op> b_ns=<ns/op>   the same timing, nothing attached
 *   TIME <unit> <prog|*> load_ms=<n>         how long loading (verification) took
 *   HELPER <unit> <prog_type> <helper> yes|no|<E>  libbpf_probe_bpf_helper's answer (choose=)
 *   CHOSE <unit> <prog> missing=<helper|->    which alternative a choose= unit loaded, and why
 *   END <unit> ms=<n>
 *   DONE
 *
 * Usage: kmatrix-loader [--cgroup DIR] [--watch-dir DIR] [--watch-value N] UNIT...
 *   --watch-value: the watched_prefixes value for the watch directory (enum fs_file_watch; the
 *   test passes the sensor's FileWatch.Report, so the two cannot disagree)
 *   UNIT = label=path[:opt]...   opt: +PREFIX  load only programs whose name starts with PREFIX
 *                                     -PREFIX  do not load programs whose name starts with PREFIX
 *                                     !NAME    do not load the program NAME
 *                                     each     load/attach/fire each program on its own
 *                                     need=KFUNC  the programs call KFUNC: where the kernel's
 *                                              BTF lacks it they are reported load=skip:no-KFUNC
 *                                              and not loaded (a user space must pick the other set)
 *                                     cost     (with each) time the program's signal workload
 *                                              attached vs not; programs are named <signal>__<path>
 *                                     choose=PRIMARY,ALT,HELPER...  two alternative programs: PRIMARY
 *                                              is loaded where its program type may call every
 *                                              HELPER (libbpf_probe_bpf_helper, names without
 *                                              bpf_), else ALT, which PRIMARY is then reported
 *                                              load=skip:no-helper-<first missing>; the sensor's
 *                                              chooser decides the same way
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#define MAX_UNITS 32
#define MAX_OPTS 80
#define MAX_PROGS 64
#define LOG_LINES 24
#define MAX_ENTRIES_DUMPED 4096
#define COST_REPS 5
#define LPM_PATH_LEN 256 /* FS_PATH_LEN of bpf/flowsec.h: the watched_prefixes key is u32 + 256 bytes */

struct unit {
	char label[64];
	const char *path;
	const char *opts[MAX_OPTS];
	int nopts;
	bool each;
	bool cost;
	const char *need; /* a kfunc the programs call: skipped, not loaded, where BTF lacks it */
	const char *choose; /* PRIMARY,ALT,HELPER...: see the usage above */
};

static const char *cgroup_dir;
static char watch_dir[128];
static __u32 watch_value = 3; /* enum fs_file_watch: FS_FILE_WATCH_REPORT (reads and changes) */
static char comm[32];

/* ---------- output ---------- */

static void hex(const void *data, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *p = data;
	char buf[512];
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		buf[n++] = digits[p[i] >> 4];
		buf[n++] = digits[p[i] & 15];
		if (n == sizeof(buf)) {
			fwrite(buf, 1, n, stdout);
			n = 0;
		}
	}
	fwrite(buf, 1, n, stdout);
}

static const char *err_name(int err)
{
	static char buf[64];
	err = err < 0 ? -err : err;
	const char *name = strerrorname_np(err);
	snprintf(buf, sizeof(buf), "%s(%d)", name ? name : "E?", err);
	return buf;
}

/* libbpf's messages go to a ring of recent lines, printed only when a load fails. */
static char log_lines[LOG_LINES][240];
static int log_next;

static int on_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	static char partial[240];
	char *buf = NULL;
	if (level == LIBBPF_DEBUG)
		return 0;
	/* A failed load prints the whole verifier log in one message: keep its last lines. */
	if (vasprintf(&buf, fmt, args) < 0)
		return 0;
	char *s = buf;
	while (*s) {
		char *nl = strchr(s, '\n');
		size_t used = strlen(partial);
		size_t take = nl ? (size_t)(nl - s) : strlen(s);
		if (take > sizeof(partial) - 1 - used)
			take = sizeof(partial) - 1 - used;
		memcpy(partial + used, s, take);
		partial[used + take] = 0;
		if (!nl)
			break;
		if (partial[0]) {
			snprintf(log_lines[log_next % LOG_LINES], sizeof(log_lines[0]), "%s", partial);
			log_next++;
		}
		partial[0] = 0;
		s = nl + 1;
	}
	free(buf);
	return 0;
}

static void log_reset(void)
{
	log_next = 0;
}

static void log_dump(const char *unit, const char *prog)
{
	int first = log_next > LOG_LINES ? log_next - LOG_LINES : 0;
	for (int i = first; i < log_next; i++) {
		char *line = log_lines[i % LOG_LINES];
		for (char *c = line; *c; c++)
			if (*c == '\t' || *c == '\r')
				*c = ' ';
		printf("VLOG %s %s %s\n", unit, prog, line);
	}
}

static __u64 now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* ---------- kernel facts ---------- */

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static bool kernel_has_func(const char *name)
{
	struct btf *vmlinux = btf__load_vmlinux_btf();
	if (!vmlinux)
		return false;
	bool found = btf__find_by_name_kind(vmlinux, name, BTF_KIND_FUNC) > 0;
	btf__free(vmlinux);
	return found;
}

static void print_file_fact(const char *name, const char *path)
{
	char buf[512] = "";
	FILE *f = fopen(path, "r");
	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = 0;
		fclose(f);
	}
	buf[strcspn(buf, "\n")] = 0;
	for (char *c = buf; *c; c++)
		if (*c == ' ')
			*c = '_';
	printf("FACT %s %s\n", name, buf[0] ? buf : "-");
}

/* This process's cgroup v2 id (what bpf_skb_cgroup_id reports for its sockets): the inode of its
 * directory under the cgroup2 mount, found from the "0::/path" line of /proc/self/cgroup. */
static __u64 own_cgroup_id(void)
{
	char line[512], path[700];
	__u64 id = 0;
	FILE *f = fopen("/proc/self/cgroup", "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3))
			continue;
		line[strcspn(line, "\n")] = 0;
		struct stat st;
		snprintf(path, sizeof(path), "%s%s", cgroup_dir, line + 3);
		if (stat(path, &st) == 0)
			id = st.st_ino;
	}
	if (f)
		fclose(f);
	return id;
}

/* The loader runs in a cgroup of its own below the attach point, so the cgroup ids the programs
 * report (socket and current task) are this one, distinct from the root's. */
static char own_cgroup[160], home_cgroup[600];

static bool write_pid(const char *dir)
{
	char path[700];
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	FILE *f = fopen(path, "w");
	if (!f)
		return false;
	bool ok = fprintf(f, "%d\n", getpid()) > 0;
	return fclose(f) == 0 && ok;
}

static void enter_own_cgroup(void)
{
	char line[512];
	FILE *f = fopen("/proc/self/cgroup", "r");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "0::", 3)) {
			line[strcspn(line, "\n")] = 0;
			snprintf(home_cgroup, sizeof(home_cgroup), "%s%s", cgroup_dir, line + 3);
		}
	if (f)
		fclose(f);
	snprintf(own_cgroup, sizeof(own_cgroup), "%s/kmatrix.%d", cgroup_dir, getpid());
	if (mkdir(own_cgroup, 0755) || !write_pid(own_cgroup)) {
		printf("FACT own_cgroup_error %s\n", err_name(errno));
		rmdir(own_cgroup);
		own_cgroup[0] = 0;
	}
}

static void leave_own_cgroup(void)
{
	if (own_cgroup[0] && home_cgroup[0] && write_pid(home_cgroup))
		rmdir(own_cgroup);
}

static void print_facts(void)
{
	struct utsname u;
	uname(&u);
	printf("FACT release %s\n", u.release);
	printf("FACT pid %d\n", getpid());
	printf("FACT comm %s\n", comm);
	printf("FACT btf %s\n", exists("/sys/kernel/btf/vmlinux") ? "yes" : "no");
	printf("FACT kprobe_events %s\n",
	       exists("/sys/kernel/tracing/kprobe_events") || exists("/sys/kernel/debug/tracing/kprobe_events") ? "yes"
														: "no");
	printf("FACT cgroup %s\n", cgroup_dir);
	printf("FACT cgroup_id %llu\n", (unsigned long long)own_cgroup_id());
	print_file_fact("lsm", "/sys/kernel/security/lsm");
	print_file_fact("lockdown", "/sys/kernel/security/lockdown");

	struct btf *vmlinux = btf__load_vmlinux_btf();
	if (!vmlinux) {
		printf("FACT vmlinux_btf_error %s\n", err_name(errno));
		return;
	}
	static const char *kfuncs[] = { "bpf_task_work_schedule_resume_impl", "bpf_task_work_schedule_resume" };
	for (size_t i = 0; i < sizeof(kfuncs) / sizeof(kfuncs[0]); i++)
		printf("FACT kfunc_%s %s\n", kfuncs[i],
		       btf__find_by_name_kind(vmlinux, kfuncs[i], BTF_KIND_FUNC) > 0 ? "yes" : "no");
	/* Drop reasons are renumbered between kernels: the test names them with the guest's own enum. */
	int id = btf__find_by_name_kind(vmlinux, "skb_drop_reason", BTF_KIND_ENUM);
	if (id > 0) {
		const struct btf_type *t = btf__type_by_id(vmlinux, id);
		const struct btf_enum *e = btf_enum(t);
		for (int i = 0; i < btf_vlen(t); i++)
			printf("ENUM skb_drop_reason %s %u\n", btf__name_by_offset(vmlinux, e[i].name_off), e[i].val);
	}
	btf__free(vmlinux);
}

/* ---------- triggers ---------- */

static void set_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static struct sockaddr_in loopback(const char *ip, unsigned short port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static unsigned short local_port(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	if (getsockname(fd, (struct sockaddr *)&a, &len))
		return 0;
	return ntohs(a.sin_port);
}

static int read_full(int fd, char *buf, int len)
{
	int got = 0;
	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n <= 0)
			return got;
		got += n;
	}
	return got;
}

/* A bound, never-listening port: connections to it are refused, datagrams to it dropped. */
static unsigned short closed_port(int type)
{
	int fd = socket(AF_INET, type, 0);
	struct sockaddr_in a = loopback("127.0.0.1", 0);
	bind(fd, (struct sockaddr *)&a, sizeof(a));
	unsigned short port = local_port(fd);
	close(fd);
	return port;
}

/* One loopback TCP connection with data both ways; the client closes first. */
static int tcp_connection(unsigned short *server_port, unsigned short *client_port, int client_sends, int server_sends)
{
	char buf[256];
	int srv = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = loopback("127.0.0.1", 0);
	if (bind(srv, (struct sockaddr *)&a, sizeof(a)) || listen(srv, 8))
		return -errno;
	a.sin_port = htons(local_port(srv));
	int cli = socket(AF_INET, SOCK_STREAM, 0);
	set_timeouts(cli);
	if (connect(cli, (struct sockaddr *)&a, sizeof(a))) {
		int err = -errno;
		close(cli);
		close(srv);
		return err;
	}
	int acc = accept(srv, NULL, NULL);
	set_timeouts(acc);
	memset(buf, 'k', sizeof(buf));
	int ok = write(cli, buf, client_sends) == client_sends && read_full(acc, buf, client_sends) == client_sends &&
		 write(acc, buf, server_sends) == server_sends && read_full(cli, buf, server_sends) == server_sends;
	if (server_port)
		*server_port = ntohs(a.sin_port);
	if (client_port)
		*client_port = local_port(cli);
	close(cli);
	while (read(acc, buf, sizeof(buf)) > 0)
		;
	close(acc);
	close(srv);
	return ok ? 0 : -EIO;
}

/* A loopback connection left open until the unit's maps are dumped (held_close): what a
 * socket-table entry holds while the connection lasts. */
static int held_fds[3] = { -1, -1, -1 };

static int held_open(unsigned short *server_port, unsigned short *client_port)
{
	int one = 1;
	int srv = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = loopback("127.0.0.1", 0);
	if (bind(srv, (struct sockaddr *)&a, sizeof(a)) || listen(srv, 8)) {
		int err = -errno;
		close(srv);
		return err;
	}
	a.sin_port = htons(local_port(srv));
	int cli = socket(AF_INET, SOCK_STREAM, 0);
	set_timeouts(cli);
	int acc = connect(cli, (struct sockaddr *)&a, sizeof(a)) ? -1 : accept(srv, NULL, NULL);
	held_fds[0] = srv;
	held_fds[1] = cli;
	held_fds[2] = acc;
	*server_port = ntohs(a.sin_port);
	*client_port = local_port(cli);
	return acc < 0 ? -EIO : 0;
}

static void held_close(void)
{
	for (int i = 0; i < 3; i++) {
		if (held_fds[i] >= 0)
			close(held_fds[i]);
		held_fds[i] = -1;
	}
}

static void fire_tcp(const char *unit)
{
	unsigned short sp = 0, cp = 0, hsp = 0, hcp = 0;
	int rc = tcp_connection(&sp, &cp, 100, 200);
	int held_rc = held_open(&hsp, &hcp);
	/* Let the client's FIN_WAIT2 → TIME_WAIT (its CLOSE transition) happen before the drain. */
	usleep(20000);
	printf("FIRE %s tcp server=127.0.0.1:%u client=127.0.0.1:%u client_sent=100 server_sent=200 rc=%d "
	       "held_server=127.0.0.1:%u held_client=127.0.0.1:%u held_rc=%d\n",
	       unit, sp, cp, rc, hsp, hcp, held_rc);
}

static const char dns_name[] = "kmatrix.flowsec.test";

static int dns_query(unsigned char *q, unsigned short id)
{
	int n = 0;
	unsigned char header[12] = { id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0 };
	memcpy(q, header, sizeof(header));
	n = sizeof(header);
	const char *label = dns_name;
	while (*label) {
		const char *dot = strchr(label, '.');
		int len = dot ? dot - label : (int)strlen(label);
		q[n++] = len;
		memcpy(q + n, label, len);
		n += len;
		label += len + (dot ? 1 : 0);
	}
	q[n++] = 0;
	unsigned char tail[4] = { 0, 1, 0, 1 }; /* A, IN */
	memcpy(q + n, tail, 4);
	return n + 4;
}

/* The answer to query q: same question, QR|RD|RA, one A record 192.0.2.53 (TEST-NET-1). */
static int dns_answer(unsigned char *r, const unsigned char *q, int qlen)
{
	memcpy(r, q, qlen);
	r[2] = 0x81;
	r[3] = 0x80;
	r[7] = 1;
	unsigned char answer[16] = { 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 53 };
	memcpy(r + qlen, answer, sizeof(answer));
	return qlen + sizeof(answer);
}

/* Binds fd to port 53 on 127.0.0.1, or on 127.0.83.53 where a local resolver holds the first. */
static const char *bind_dns_port(int fd, struct sockaddr_in *sa)
{
	*sa = loopback("127.0.0.1", 53);
	if (bind(fd, (struct sockaddr *)sa, sizeof(*sa)) == 0)
		return "127.0.0.1";
	*sa = loopback("127.0.83.53", 53);
	return bind(fd, (struct sockaddr *)sa, sizeof(*sa)) == 0 ? "127.0.83.53" : NULL;
}

/* The same lookup over TCP (2-byte length prefixes), the query written in two parts. */
static void fire_dns_tcp(const char *unit)
{
	unsigned char q[514], r[600], buf[600];
	struct sockaddr_in sa;
	int one = 1;
	int lst = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	const char *server_ip = bind_dns_port(lst, &sa);
	if (!server_ip || listen(lst, 1)) {
		printf("FIRE %s dnstcp rc=%d\n", unit, -errno);
		close(lst);
		return;
	}
	int cli = socket(AF_INET, SOCK_STREAM, 0);
	set_timeouts(cli);
	setsockopt(cli, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int rc = connect(cli, (struct sockaddr *)&sa, sizeof(sa)) ? -errno : 0;
	int srv = rc ? -1 : accept(lst, NULL, NULL);
	unsigned short id = 0x4b54;
	int qlen = dns_query(q + 2, id), rlen = 0;
	q[0] = qlen >> 8;
	q[1] = qlen & 0xff;
	if (srv >= 0) {
		set_timeouts(srv);
		send(cli, q, 3, 0);
		send(cli, q + 3, qlen + 2 - 3, 0);
		if (read_full(srv, (char *)buf, qlen + 2) == qlen + 2) {
			rlen = dns_answer(r + 2, buf + 2, qlen);
			r[0] = rlen >> 8;
			r[1] = rlen & 0xff;
			send(srv, r, rlen + 2, 0);
			rc = read_full(cli, (char *)buf, rlen + 2) == rlen + 2 ? 0 : -EIO;
		} else {
			rc = -EIO;
		}
	}
	printf("FIRE %s dnstcp client=127.0.0.1:%u server=%s:53 id=%u name=%s query_len=%d response_len=%d answer=192.0.2.53 "
	       "rc=%d\n",
	       unit, local_port(cli), server_ip, id, dns_name, qlen, rlen, rc);
	close(cli);
	if (srv >= 0)
		close(srv);
	close(lst);
}

/* A DNS query from an unconnected UDP socket to a server on port 53, and its answer. */
static void fire_dns(const char *unit)
{
	unsigned char q[512], r[512];
	const char *server_ip = "127.0.0.1";
	int srv = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sa = loopback(server_ip, 53);
	if (bind(srv, (struct sockaddr *)&sa, sizeof(sa))) {
		/* Port 53 taken on the host (a local resolver): any 127/8 address reaches lo too. */
		server_ip = "127.0.83.53";
		sa = loopback(server_ip, 53);
		if (bind(srv, (struct sockaddr *)&sa, sizeof(sa))) {
			printf("FIRE %s dns rc=%d\n", unit, -errno);
			close(srv);
			return;
		}
	}
	set_timeouts(srv);
	int cli = socket(AF_INET, SOCK_DGRAM, 0);
	set_timeouts(cli);
	unsigned short id = 0x4b4d;
	int qlen = dns_query(q, id);
	sendto(cli, q, qlen, 0, (struct sockaddr *)&sa, sizeof(sa));
	struct sockaddr_in from;
	socklen_t fromlen = sizeof(from);
	int got = recvfrom(srv, r, sizeof(r), 0, (struct sockaddr *)&from, &fromlen);
	int rlen = 0;
	if (got == qlen) {
		rlen = dns_answer(r, q, qlen);
		sendto(srv, r, rlen, 0, (struct sockaddr *)&from, fromlen);
		got = recv(cli, q, sizeof(q), 0);
	}
	printf("FIRE %s dns client=127.0.0.1:%u server=%s:53 id=%u name=%s query_len=%d response_len=%d answer=192.0.2.53 "
	       "rc=%d\n",
	       unit, local_port(cli), server_ip, id, dns_name, qlen, rlen, got == rlen ? 0 : -EIO);
	close(cli);
	close(srv);
}

static int spawn_true(void)
{
	pid_t child = fork();
	if (child == 0) {
		execl("/bin/true", "/bin/true", "kmatrix-arg", (char *)NULL);
		_exit(127);
	}
	int status = 0;
	waitpid(child, &status, 0);
	return child;
}

static void fire_exec(const char *unit)
{
	pid_t child = fork();
	if (child == 0) {
		execl("/bin/true", "/bin/true", "kmatrix-arg", (char *)NULL);
		_exit(127);
	}
	int status = 0;
	waitpid(child, &status, 0);
	printf("FIRE %s exec child=%d parent=%d path=/bin/true arg=kmatrix-arg status=%d\n", unit, child, getpid(), status);
	/* A child that exits with a known code without exec: its exit record carries the loader's name. */
	child = fork();
	if (child == 0)
		_exit(7);
	waitpid(child, &status, 0);
	printf("FIRE %s exit child=%d parent=%d code=7 status=%d\n", unit, child, getpid(), status);
}

static void file_result(const char *unit, const char *op, const char *sys, const char *path, const char *new_path,
			long rc)
{
	printf("FIRE %s file op=%s syscall=%s path=%s%s%s result=%ld\n", unit, op, sys, path, new_path ? " new_path=" : "",
	       new_path ? new_path : "", rc < 0 ? -errno : rc);
}

static void close_fd(long fd)
{
	if (fd >= 0)
		close(fd);
}

/* Every file syscall the file object hooks, each on a path under the watched directory: through
 * libc where it uses that syscall, raw otherwise (x86-64 glibc opens with openat and renames with
 * rename). Each prints what the kernel returned, for the test to match with a record. */
static void fire_file(const char *unit)
{
	char a[256], b[256], c[256], missing[256];
	snprintf(a, sizeof(a), "%s/secret", watch_dir);
	snprintf(b, sizeof(b), "%s/renamed", watch_dir);
	snprintf(c, sizeof(c), "%s/created", watch_dir);
	snprintf(missing, sizeof(missing), "%s/missing", watch_dir);
	mkdir(watch_dir, 0700);
	long fd;

	fd = syscall(SYS_openat, AT_FDCWD, a, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	file_result(unit, "create", "openat", a, NULL, fd);
	if (fd >= 0 && write(fd, "x", 1) != 1)
		perror("write");
	close_fd(fd);
	fd = syscall(SYS_openat, AT_FDCWD, a, O_RDONLY);
	file_result(unit, "open", "openat", a, NULL, fd);
	close_fd(fd);
	fd = syscall(SYS_openat, AT_FDCWD, missing, O_RDONLY);
	file_result(unit, "open", "openat", missing, NULL, fd);
	close_fd(fd);
	int dir = open(watch_dir, O_RDONLY | O_DIRECTORY);
	fd = syscall(SYS_openat, dir, "secret", O_RDONLY); /* relative to a directory fd */
	file_result(unit, "open", "openat-relative", a, NULL, fd);
	close_fd(fd);
	close(dir);
	fd = syscall(SYS_open, a, O_RDWR);
	file_result(unit, "write", "open", a, NULL, fd);
	close_fd(fd);
	struct open_how_compat {
		__u64 flags, mode, resolve;
	} how = { .flags = O_RDONLY };
	fd = syscall(SYS_openat2, AT_FDCWD, a, &how, sizeof(how));
	file_result(unit, "open", "openat2", a, NULL, fd);
	close_fd(fd);
	fd = syscall(SYS_creat, c, 0640);
	file_result(unit, "create", "creat", c, NULL, fd);
	close_fd(fd);

	long rc = syscall(SYS_rename, a, b);
	file_result(unit, "rename", "rename", a, b, rc);
	rc = syscall(SYS_renameat, AT_FDCWD, b, AT_FDCWD, a);
	file_result(unit, "rename", "renameat", b, a, rc);
	rc = syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 0);
	file_result(unit, "rename", "renameat2", a, b, rc);
	rc = syscall(SYS_unlink, b);
	file_result(unit, "unlink", "unlink", b, NULL, rc);
	rc = syscall(SYS_unlinkat, AT_FDCWD, c, 0);
	file_result(unit, "unlink", "unlinkat", c, NULL, rc);
	rmdir(watch_dir);
}

/* Two packets the kernel drops: a SYN to a closed TCP port (answered by RST) and a datagram to a
 * closed UDP port (answered by ICMP port unreachable). Both sources are bound first so their ports
 * are known even after the failure. */
static void fire_drop(const char *unit)
{
	unsigned short tcp_dst = closed_port(SOCK_STREAM);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = loopback("127.0.0.1", 0);
	bind(c, (struct sockaddr *)&a, sizeof(a));
	unsigned short tcp_src = local_port(c);
	a = loopback("127.0.0.1", tcp_dst);
	int rc = connect(c, (struct sockaddr *)&a, sizeof(a)) ? -errno : 0;
	close(c);

	unsigned short udp_dst = closed_port(SOCK_DGRAM);
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	a = loopback("127.0.0.1", 0);
	bind(u, (struct sockaddr *)&a, sizeof(a));
	unsigned short udp_src = local_port(u);
	a = loopback("127.0.0.1", udp_dst);
	char payload[20];
	memset(payload, 'd', sizeof(payload));
	sendto(u, payload, sizeof(payload), 0, (struct sockaddr *)&a, sizeof(a));
	usleep(10000);
	close(u);
	printf("FIRE %s drop tcp=127.0.0.1:%u>127.0.0.1:%u connect_rc=%d udp=127.0.0.1:%u>127.0.0.1:%u udp_len=%zu\n", unit,
	       tcp_src, tcp_dst, rc, udp_src, udp_dst, sizeof(payload));
}

static void fire_all(const char *unit)
{
	fire_tcp(unit);
	fire_dns(unit);
	fire_dns_tcp(unit);
	fire_exec(unit);
	fire_file(unit);
	fire_drop(unit);
}

/* ---------- cost workloads: one operation of each signal, repeated ---------- */

struct workload {
	int srv, sink, src;
	struct sockaddr_in srv_addr, sink_addr, closed_addr;
};

static void workload_open(struct workload *w)
{
	w->srv = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(w->srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	w->srv_addr = loopback("127.0.0.1", 0);
	bind(w->srv, (struct sockaddr *)&w->srv_addr, sizeof(w->srv_addr));
	listen(w->srv, 64);
	w->srv_addr.sin_port = htons(local_port(w->srv));
	w->sink = socket(AF_INET, SOCK_DGRAM, 0);
	w->sink_addr = loopback("127.0.0.1", 0);
	bind(w->sink, (struct sockaddr *)&w->sink_addr, sizeof(w->sink_addr));
	w->sink_addr.sin_port = htons(local_port(w->sink));
	w->src = socket(AF_INET, SOCK_DGRAM, 0);
	w->closed_addr = loopback("127.0.0.1", closed_port(SOCK_DGRAM));
}

static void workload_close(struct workload *w)
{
	close(w->srv);
	close(w->sink);
	close(w->src);
}

static void one_op(struct workload *w, const char *signal)
{
	char buf[64] = { 0 };
	if (!strcmp(signal, "tcp")) {
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(c, (struct sockaddr *)&w->srv_addr, sizeof(w->srv_addr)) == 0) {
			int a = accept(w->srv, NULL, NULL);
			close(c);
			close(a);
		} else {
			close(c);
		}
	} else if (!strcmp(signal, "exec") || !strcmp(signal, "exit")) {
		spawn_true();
	} else if (!strcmp(signal, "open")) {
		int fd = open("/dev/null", O_RDONLY);
		close(fd);
	} else if (!strcmp(signal, "udp")) {
		sendto(w->src, buf, 32, 0, (struct sockaddr *)&w->sink_addr, sizeof(w->sink_addr));
		recv(w->sink, buf, sizeof(buf), MSG_DONTWAIT);
	} else if (!strcmp(signal, "drop")) {
		sendto(w->src, buf, 32, 0, (struct sockaddr *)&w->closed_addr, sizeof(w->closed_addr));
	}
}

/* ns per operation over one run of iters operations. */
static double time_ops(const char *signal, int iters)
{
	struct workload w;
	workload_open(&w);
	__u64 start = now_ns();
	for (int i = 0; i < iters; i++)
		one_op(&w, signal);
	double per = (double)(now_ns() - start) / iters;
	workload_close(&w);
	return per;
}

/* Iterations that take about 20 ms unhooked (at least 5), so slow kernels (TCG) stay quick. */
static int calibrate(const char *signal)
{
	struct workload w;
	workload_open(&w);
	int iters = 0;
	__u64 start = now_ns();
	while (now_ns() - start < 20000000ull && iters < 100000) {
		one_op(&w, signal);
		iters++;
	}
	workload_close(&w);
	return iters < 5 ? 5 : iters;
}

/* ---------- one unit ---------- */

struct attached {
	struct bpf_link *link;
	bool tc;
	struct bpf_tc_hook hook;
	struct bpf_tc_opts opts;
	bool hook_created;
};

static bool selected(const struct unit *u, const char *name)
{
	bool has_include = false, included = false;
	for (int i = 0; i < u->nopts; i++) {
		const char *o = u->opts[i];
		if (o[0] == '+') {
			has_include = true;
			if (!strncmp(name, o + 1, strlen(o + 1)))
				included = true;
		} else if (o[0] == '-' && !strncmp(name, o + 1, strlen(o + 1))) {
			return false;
		} else if (o[0] == '!' && !strcmp(name, o + 1)) {
			return false;
		}
	}
	return !has_include || included;
}

/* Opens the object with autoload on for the programs `want` accepts. */
static struct bpf_object *open_object(const struct unit *u, const char *only, char names[][64], int *count)
{
	struct bpf_object *obj = bpf_object__open_file(u->path, NULL);
	if (!obj)
		return NULL;
	struct bpf_program *prog;
	int n = 0;
	bpf_object__for_each_program(prog, obj)
	{
		const char *name = bpf_program__name(prog);
		bool on = selected(u, name) && (!only || !strcmp(only, name));
		bpf_program__set_autoload(prog, on);
		if (on && names && n < MAX_PROGS)
			snprintf(names[n++], 64, "%s", name);
	}
	if (count)
		*count = n;
	return obj;
}

static void fill_watch(const char *unit, struct bpf_object *obj)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, "watched_prefixes");
	if (!map || bpf_map__key_size(map) != 4 + LPM_PATH_LEN)
		return;
	struct {
		__u32 prefixlen;
		char path[LPM_PATH_LEN];
	} key = { 0 };
	snprintf(key.path, sizeof(key.path), "%s/", watch_dir);
	key.prefixlen = strlen(key.path) * 8;
	int err = bpf_map_update_elem(bpf_map__fd(map), &key, &watch_value, BPF_ANY);
	printf("FIRE %s watch prefix=%s value=%u rc=%d\n", unit, key.path, watch_value, err);
}

static const char *attach_one(struct bpf_program *prog, struct attached *at, char *why, size_t whylen)
{
	enum bpf_prog_type type = bpf_program__type(prog);
	const char *name = bpf_program__name(prog);
	memset(at, 0, sizeof(*at));
	int err;
	switch (type) {
	case BPF_PROG_TYPE_CGROUP_SKB:
	case BPF_PROG_TYPE_CGROUP_SOCK:
	case BPF_PROG_TYPE_CGROUP_SOCK_ADDR:
	case BPF_PROG_TYPE_SOCK_OPS:
	case BPF_PROG_TYPE_CGROUP_SOCKOPT:
	case BPF_PROG_TYPE_CGROUP_SYSCTL: {
		int cg = open(cgroup_dir, O_RDONLY | O_DIRECTORY);
		if (cg < 0)
			return snprintf(why, whylen, "fail:%s", err_name(errno)), why;
		at->link = bpf_program__attach_cgroup(prog, cg);
		err = at->link ? 0 : -errno;
		close(cg);
		break;
	}
	case BPF_PROG_TYPE_SCHED_CLS: {
		/* tc on lo; the program name says the direction (…_ingress, else egress). */
		at->tc = true;
		at->hook.sz = sizeof(at->hook);
		at->hook.ifindex = if_nametoindex("lo");
		at->hook.attach_point = strstr(name, "ingress") ? BPF_TC_INGRESS : BPF_TC_EGRESS;
		err = bpf_tc_hook_create(&at->hook);
		at->hook_created = err == 0;
		if (err && err != -EEXIST)
			break;
		at->opts.sz = sizeof(at->opts);
		at->opts.prog_fd = bpf_program__fd(prog);
		err = bpf_tc_attach(&at->hook, &at->opts);
		break;
	}
	case BPF_PROG_TYPE_SOCKET_FILTER:
	case BPF_PROG_TYPE_XDP:
	case BPF_PROG_TYPE_SK_SKB:
	case BPF_PROG_TYPE_SK_MSG:
	case BPF_PROG_TYPE_STRUCT_OPS:
	case BPF_PROG_TYPE_EXT:
		return snprintf(why, whylen, "skip:needs-target"), why;
	default:
		if (!strncmp(bpf_program__section_name(prog), "iter", 4) ||
		    !strncmp(bpf_program__section_name(prog), "uprobe", 6) ||
		    !strncmp(bpf_program__section_name(prog), "usdt", 4))
			return snprintf(why, whylen, "skip:needs-target"), why;
		at->link = bpf_program__attach(prog);
		err = at->link ? 0 : -errno;
		break;
	}
	if (err)
		return snprintf(why, whylen, "fail:%s", err_name(err)), why;
	return "ok";
}

static void detach_one(struct attached *at)
{
	if (at->link)
		bpf_link__destroy(at->link);
	if (at->tc) {
		if (at->opts.prog_id) {
			struct bpf_tc_opts d = { .sz = sizeof(d), .handle = at->opts.handle, .priority = at->opts.priority };
			bpf_tc_detach(&at->hook, &d);
		}
		if (at->hook_created) {
			at->hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
			bpf_tc_hook_destroy(&at->hook);
		}
	}
	memset(at, 0, sizeof(*at));
}

static void print_prog(const char *unit, struct bpf_program *prog, const char *load, const char *attach)
{
	struct bpf_prog_info info;
	memset(&info, 0, sizeof(info));
	__u32 len = sizeof(info);
	int fd = bpf_program__fd(prog);
	if (fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
		printf("PROG %s %s section=%s load=%s attach=%s xlated=%u verified=%u jited=%u run_cnt=%llu run_ns=%llu\n",
		       unit, bpf_program__name(prog), bpf_program__section_name(prog), load, attach,
		       info.xlated_prog_len / 8, info.verified_insns, info.jited_prog_len,
		       (unsigned long long)info.run_cnt, (unsigned long long)info.run_time_ns);
	} else {
		printf("PROG %s %s section=%s load=%s attach=%s xlated=0 verified=0 jited=0 run_cnt=0 run_ns=0\n", unit,
		       bpf_program__name(prog), bpf_program__section_name(prog), load, attach);
	}
}

static const char *ring_unit, *ring_map;

static int on_record(void *ctx, void *data, size_t len)
{
	(void)ctx;
	printf("RECORD %s %s ", ring_unit, ring_map);
	hex(data, len);
	putchar('\n');
	return 0;
}

static void dump_maps(const char *unit, struct bpf_object *obj)
{
	struct bpf_map *map;
	int cpus = libbpf_num_possible_cpus();
	bpf_object__for_each_map(map, obj)
	{
		const char *name = bpf_map__name(map);
		int fd = bpf_map__fd(map);
		if (fd < 0)
			continue;
		enum bpf_map_type type = bpf_map__type(map);
		__u32 ks = bpf_map__key_size(map), vs = bpf_map__value_size(map);
		if (type == BPF_MAP_TYPE_RINGBUF) {
			ring_unit = unit;
			ring_map = name;
			struct ring_buffer *rb = ring_buffer__new(fd, on_record, NULL, NULL);
			if (rb) {
				ring_buffer__consume(rb);
				ring_buffer__free(rb);
			}
		} else if ((type == BPF_MAP_TYPE_HASH || type == BPF_MAP_TYPE_LRU_HASH) && vs <= 512) {
			unsigned char key[512], next[512], value[512];
			void *prev = NULL;
			int n = 0;
			while (n < MAX_ENTRIES_DUMPED && bpf_map_get_next_key(fd, prev, next) == 0) {
				memcpy(key, next, ks);
				prev = key;
				if (bpf_map_lookup_elem(fd, key, value))
					continue;
				printf("ENTRY %s %s ", unit, name);
				hex(key, ks);
				putchar(' ');
				hex(value, vs);
				putchar('\n');
				n++;
			}
		} else if (type == BPF_MAP_TYPE_PERCPU_ARRAY && vs == 8) {
			__u64 *values = calloc(cpus, 8);
			for (__u32 i = 0; i < bpf_map__max_entries(map); i++) {
				if (bpf_map_lookup_elem(fd, &i, values))
					continue;
				unsigned long long sum = 0;
				for (int c = 0; c < cpus; c++)
					sum += values[c];
				printf("COUNTER %s %s %u %llu\n", unit, name, i, sum);
			}
			free(values);
		}
	}
}

/* Loads the selected programs (or only `only`). On failure, each program is tried alone to name
 * the one(s) that fail, and the object is reloaded with the rest. Returns the loaded object or
 * NULL; failed[] collects the names that did not load. */
static struct bpf_object *load_unit(const struct unit *u, const char *only, char failed[][64], int *nfailed)
{
	char names[MAX_PROGS][64];
	int count = 0;
	*nfailed = 0;
	log_reset();
	struct bpf_object *obj = open_object(u, only, names, &count);
	if (!obj) {
		printf("FIRE %s open rc=%d\n", u->label, -errno);
		return NULL;
	}
	if (bpf_object__load(obj) == 0)
		return obj;
	bpf_object__close(obj);

	struct unit alone = *u;
	for (int i = 0; i < count; i++) {
		log_reset();
		struct bpf_object *one = open_object(&alone, names[i], NULL, NULL);
		int err = one ? bpf_object__load(one) : -errno;
		if (err) {
			snprintf(failed[*nfailed], 64, "%.63s", names[i]);
			(*nfailed)++;
			printf("PROG %s %s section=%s load=fail:%s attach=skip:not-loaded xlated=0 verified=0 jited=0 run_cnt=0 "
			       "run_ns=0\n",
			       u->label, names[i],
			       one ? bpf_program__section_name(bpf_object__find_program_by_name(one, names[i])) : "?",
			       err_name(err));
			log_dump(u->label, names[i]);
		}
		bpf_object__close(one);
	}
	if (*nfailed == count)
		return NULL;
	/* Reload without the failures. */
	struct unit rest = *u;
	for (int i = 0; i < *nfailed && rest.nopts < MAX_OPTS; i++) {
		static char exclude[MAX_PROGS][66];
		snprintf(exclude[i], sizeof(exclude[i]), "!%.63s", failed[i]);
		rest.opts[rest.nopts++] = exclude[i];
	}
	obj = open_object(&rest, only, NULL, NULL);
	if (obj && bpf_object__load(obj)) {
		printf("FIRE %s reload rc=%d\n", u->label, -errno);
		bpf_object__close(obj);
		return NULL;
	}
	return obj;
}

static const char *signal_of(const char *prog, char *buf, size_t len)
{
	const char *sep = strstr(prog, "__");
	snprintf(buf, len, "%.*s", sep ? (int)(sep - prog) : (int)strlen(prog), prog);
	return buf;
}

/* Loads, attaches, fires and dumps the programs of u (or only `only`). */
static void run_once(const struct unit *u, const char *only, double *baselines, char baseline_names[][16],
		     int *nbaselines)
{
	char failed[MAX_PROGS][64];
	int nfailed;
	__u64 start = now_ns();
	struct bpf_object *obj = load_unit(u, only, failed, &nfailed);
	printf("TIME %s %s load_ms=%llu\n", u->label, only ? only : "*", (unsigned long long)((now_ns() - start) / 1000000));
	if (!obj)
		return;
	fill_watch(u->label, obj);

	struct bpf_program *prog;
	struct attached at[MAX_PROGS];
	char attach[MAX_PROGS][96];
	int n = 0;
	bpf_object__for_each_program(prog, obj)
	{
		if (!bpf_program__autoload(prog) || n >= MAX_PROGS)
			continue;
		char why[96];
		snprintf(attach[n], sizeof(attach[n]), "%s", attach_one(prog, &at[n], why, sizeof(why)));
		n++;
	}

	if (only) {
		/* One program alone (a probe): its own signal's operation is enough to make it fire. */
		char signal[16];
		struct workload w;
		signal_of(only, signal, sizeof(signal));
		workload_open(&w);
		for (int i = 0; i < 3; i++)
			one_op(&w, signal);
		workload_close(&w);
	} else {
		fire_all(u->label);
	}

	if (u->cost && only) {
		char signal[16];
		signal_of(only, signal, sizeof(signal));
		int i;
		for (i = 0; i < *nbaselines; i++)
			if (!strcmp(baseline_names[i], signal))
				break;
		if (i < *nbaselines && !strncmp(attach[0], "ok", 2)) {
			/* Paired and alternating, so drift (TCG, a busy host) hits both sides alike:
			 * detached, attached, detached, ... best of COST_REPS each. */
			int iters = (int)baselines[2 * i + 1];
			double best_base = 0, best_att = 0;
			struct bpf_program *p = bpf_object__find_program_by_name(obj, only);
			char why[96];
			for (int rep = 0; rep < COST_REPS; rep++) {
				detach_one(&at[0]);
				double base = time_ops(signal, iters);
				if (strcmp(attach_one(p, &at[0], why, sizeof(why)), "ok"))
					break;
				double att = time_ops(signal, iters);
				if (rep == 0 || base < best_base)
					best_base = base;
				if (rep == 0 || att < best_att)
					best_att = att;
			}
			printf("COST %s %s signal=%s iters=%d attached_ns=%.0f baseline_ns=%.0f\n", u->label, only, signal,
			       iters, best_att, best_base);
		}
	}

	int i = 0;
	bpf_object__for_each_program(prog, obj)
	{
		if (!bpf_program__autoload(prog) || i >= MAX_PROGS)
			continue;
		print_prog(u->label, prog, "ok", attach[i]);
		i++;
	}
	dump_maps(u->label, obj);
	held_close();
	for (i = 0; i < n; i++)
		detach_one(&at[i]);
	bpf_object__close(obj);
}

/* Helper names indexed by enum bpf_func_id, from the UAPI header's own list. */
#define HELPER_NAME(x) #x
static const char *helper_names[] = { __BPF_FUNC_MAPPER(HELPER_NAME) };
#undef HELPER_NAME

static int helper_id(const char *name)
{
	for (size_t i = 0; i < sizeof(helper_names) / sizeof(helper_names[0]); i++)
		if (!strcmp(helper_names[i], name))
			return (int)i;
	return -1;
}

/* choose=PRIMARY,ALT,HELPER...: probes the helpers for PRIMARY's program type, prints the
 * answers, and fills `exclude` with "!<the program not loaded>". Returns false on a bad spec. */
static bool choose_program(const struct unit *u, char *exclude, size_t len)
{
	char spec[256];
	snprintf(spec, sizeof(spec), "%s", u->choose);
	char *save = NULL;
	char *primary = strtok_r(spec, ",", &save);
	char *alt = strtok_r(NULL, ",", &save);
	if (!primary || !alt)
		return false;
	struct bpf_object *obj = bpf_object__open_file(u->path, NULL);
	struct bpf_program *prog = obj ? bpf_object__find_program_by_name(obj, primary) : NULL;
	if (!prog) {
		bpf_object__close(obj);
		return false;
	}
	enum bpf_prog_type type = bpf_program__type(prog);
	char section[128];
	snprintf(section, sizeof(section), "%s", bpf_program__section_name(prog));
	bpf_object__close(obj);
	const char *type_name = libbpf_bpf_prog_type_str(type);
	const char *missing = NULL;
	for (char *h = strtok_r(NULL, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
		int id = helper_id(h);
		if (id < 0)
			return false;
		int r = libbpf_probe_bpf_helper(type, id, NULL);
		printf("HELPER %s %s %s %s\n", u->label, type_name ? type_name : "?", h, r == 1 ? "yes" : r == 0 ? "no" : err_name(r));
		if (r != 1 && !missing) {
			static char first[64];
			snprintf(first, sizeof(first), "%s", h);
			missing = first;
		}
	}
	printf("CHOSE %s %s missing=%s\n", u->label, missing ? alt : primary, missing ? missing : "-");
	if (missing)
		printf("PROG %s %s section=%s load=skip:no-helper-%s attach=skip:not-loaded xlated=0 verified=0 jited=0 "
		       "run_cnt=0 run_ns=0\n",
		       u->label, primary, section, missing);
	snprintf(exclude, len, "!%s", missing ? primary : alt);
	return true;
}

static void run_unit_body(const struct unit *u)
{
	if (u->choose) {
		static char exclude[72];
		struct unit chosen = *u;
		chosen.choose = NULL;
		if (!choose_program(u, exclude, sizeof(exclude)) || chosen.nopts >= MAX_OPTS) {
			printf("FIRE %s choose rc=%d\n", u->label, -EINVAL);
			return;
		}
		chosen.opts[chosen.nopts++] = exclude;
		run_unit_body(&chosen);
		return;
	}
	if (u->need && !kernel_has_func(u->need)) {
		char names[MAX_PROGS][64];
		int count = 0;
		struct bpf_object *obj = open_object(u, NULL, names, &count);
		for (int i = 0; obj && i < count; i++)
			printf("PROG %s %s section=%s load=skip:no-%s attach=skip:not-loaded xlated=0 verified=0 jited=0 "
			       "run_cnt=0 run_ns=0\n",
			       u->label, names[i], bpf_program__section_name(bpf_object__find_program_by_name(obj, names[i])),
			       u->need);
		bpf_object__close(obj);
		return;
	}
	if (!u->each) {
		run_once(u, NULL, NULL, NULL, NULL);
		return;
	}
	/* Every program on its own; with cost, the unhooked time of each signal first. */
	char names[MAX_PROGS][64];
	int count = 0;
	struct bpf_object *obj = open_object(u, NULL, names, &count);
	if (!obj) {
		printf("FIRE %s open rc=%d\n", u->label, -errno);
		return;
	}
	bpf_object__close(obj);
	double baselines[2 * MAX_PROGS];
	char baseline_names[MAX_PROGS][16];
	int nbaselines = 0;
	if (u->cost) {
		for (int i = 0; i < count; i++) {
			char signal[16];
			signal_of(names[i], signal, sizeof(signal));
			bool seen = false;
			for (int j = 0; j < nbaselines; j++)
				seen |= !strcmp(baseline_names[j], signal);
			if (seen)
				continue;
			int iters = calibrate(signal);
			/* The noise floor: the same alternating pairs with nothing attached on either side. */
			double best_a = 0, best_b = 0;
			for (int rep = 0; rep < COST_REPS; rep++) {
				double a = time_ops(signal, iters), b = time_ops(signal, iters);
				if (rep == 0 || a < best_a)
					best_a = a;
				if (rep == 0 || b < best_b)
					best_b = b;
			}
			printf("NOISE %s %s iters=%d a_ns=%.0f b_ns=%.0f\n", u->label, signal, iters, best_a, best_b);
			snprintf(baseline_names[nbaselines], 16, "%s", signal);
			baselines[2 * nbaselines] = 0; /* measured per program, paired with its attached runs */
			baselines[2 * nbaselines + 1] = iters;
			nbaselines++;
		}
	}
	for (int i = 0; i < count; i++)
		run_once(u, names[i], baselines, baseline_names, &nbaselines);
}

static void run_unit(const struct unit *u)
{
	printf("UNIT %s object=%s mode=%s\n", u->label, u->path, u->each ? "each" : "all");
	__u64 start = now_ns();
	run_unit_body(u);
	printf("END %s ms=%llu\n", u->label, (unsigned long long)((now_ns() - start) / 1000000));
}

/* ---------- main ---------- */

static int parse_unit(char *arg, struct unit *u)
{
	memset(u, 0, sizeof(*u));
	char *eq = strchr(arg, '=');
	if (!eq)
		return -1;
	*eq = 0;
	snprintf(u->label, sizeof(u->label), "%s", arg);
	char *save = NULL;
	u->path = strtok_r(eq + 1, ":", &save);
	for (char *opt = strtok_r(NULL, ":", &save); opt; opt = strtok_r(NULL, ":", &save)) {
		if (!strcmp(opt, "each"))
			u->each = true;
		else if (!strcmp(opt, "cost"))
			u->cost = true;
		else if (!strncmp(opt, "need=", 5))
			u->need = opt + 5;
		else if (!strncmp(opt, "choose=", 7))
			u->choose = opt + 7;
		else if ((opt[0] == '+' || opt[0] == '-' || opt[0] == '!') && u->nopts < MAX_OPTS)
			u->opts[u->nopts++] = opt;
		else
			return -1;
	}
	return u->path ? 0 : -1;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 1 << 16);
	libbpf_set_print(on_libbpf_print);
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);

	FILE *f = fopen("/proc/self/comm", "r");
	if (!f || !fgets(comm, sizeof(comm), f))
		snprintf(comm, sizeof(comm), "?");
	if (f)
		fclose(f);
	comm[strcspn(comm, "\n")] = 0;

	cgroup_dir = exists("/sys/fs/cgroup/unified/cgroup.procs") ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup";
	snprintf(watch_dir, sizeof(watch_dir), "/etc/kmatrix.%d", getpid());

	struct unit units[MAX_UNITS];
	int nunits = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--cgroup") && i + 1 < argc) {
			cgroup_dir = argv[++i];
		} else if (!strcmp(argv[i], "--watch-value") && i + 1 < argc) {
			watch_value = strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--watch-dir") && i + 1 < argc) {
			snprintf(watch_dir, sizeof(watch_dir), "%s", argv[++i]);
		} else if (nunits < MAX_UNITS && parse_unit(argv[i], &units[nunits]) == 0) {
			nunits++;
		} else {
			fprintf(stderr, "usage: %s [--cgroup DIR] [--watch-dir DIR] [--watch-value N] "
				"label=object.o[:+prefix|-prefix|!name|each|cost|need=KFUNC|choose=PRIMARY,ALT,HELPER...]...\n",
				argv[0]);
			return 2;
		}
	}

	enter_own_cgroup();
	print_facts();
	/* Run counts and run time of every program, while this fd stays open. */
	int stats = bpf_enable_stats(BPF_STATS_RUN_TIME);
	printf("FACT bpf_stats %s\n", stats >= 0 ? "yes" : err_name(errno));

	for (int i = 0; i < nunits; i++)
		run_unit(&units[i]);
	if (stats >= 0)
		close(stats);
	leave_own_cgroup();
	printf("DONE\n");
	return 0;
}
