// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * File activity on watched paths: open/openat/openat2/creat, unlink/unlinkat and
 * rename/renameat/renameat2, each reported once with the syscall's result.
 *
 * Filtering happens here, at syscall entry: the path is read from user memory and looked up in
 * an LPM trie of watched prefixes that user space fills; the longest match says whether reads,
 * changes (create/write/unlink/rename) or both are reported. An unwatched path costs that read
 * and one lookup, nothing else: no map write, no ring-buffer record.
 *
 * A watched call is held per thread until its result is known. Two ways to learn it, chosen by
 * user space at load time (it loads one set of programs):
 *  - tw_enter_*: the entry program schedules BPF task work (6.18+), which runs when the thread
 *    returns to user space and reads the return value from its registers. No exit tracepoint is
 *    attached at all, so unwatched calls pay for one hook instead of two (~200 ns less here);
 *    a watched call pays more instead (scheduling goes through an irq_work self-IPI: ~8 us in
 *    this VM), which is why frequent harmless reads are better left to "changes only".
 *  - enter_* + exit_*: the classic pair, for kernels without bpf_task_work.
 *
 * Relative paths (openat(dirfd, "x"), or "x" against the cwd) are joined to their directory by
 * walking its dentries up to the process's root, crossing mounts, at most FS_MAX_DEPTH levels;
 * that walk costs a name read per level, so only relative paths pay it. Paths with "//", "/./"
 * or "/../" are sent to user space flagged FS_FILE_UNNORMALIZED: it normalizes and checks again,
 * so "/tmp/../etc/shadow" cannot slip past a prefix. Symbolic and hard links are not followed
 * (the name a program used is what is matched, as in Falco).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "flowsec.h"

/* Wake the consumer only when this much is queued; otherwise it drains on its own interval. */
#define WAKEUP_THRESHOLD (256 * 1024)

#define AT_FDCWD -100
#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000

/* Directory levels (names) joined to a relative path; power of two, used as an index mask. */
#define FS_MAX_DEPTH 16
/* Extra walk steps for mount crossings (a crossing does not add a name). */
#define FS_MAX_CROSSINGS 8

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Referenced so the record layouts land in the object's BTF, where the layout test reads them. */
struct fs_file_record *unused_fs_file_record __attribute__((unused));
struct fs_path_key *unused_fs_path_key __attribute__((unused));

/* Weak: the object still loads where the kfunc does not exist, as long as the tw_* programs
 * are not loaded (user space picks the exit-tracepoint programs there). */
extern int bpf_task_work_schedule_resume_impl(struct task_struct *task, struct bpf_task_work *tw,
					      void *map__map, bpf_task_work_callback_t callback,
					      void *aux__prog) __ksym __weak;

/* A call waiting for its result; the task work must live in a map value. */
struct pending {
	struct bpf_task_work tw;
	struct fs_file_record rec;
	/* A path that could not be read at entry is read again with the result: the syscall has
	 * faulted its page in by then. */
	const char *upath;
	const char *upath2;
	__s32 dfd;
	__s32 dfd2;
	__u32 want;    /* the fs_file_watch bit this call needs */
	__u8 unread;   /* bit 0: path, bit 1: new_path still to read */
	__u8 reported; /* already known to be watched at entry */
	__u8 reserved[2];
};

/* Per-CPU working memory: lookup keys and the path being built exceed the 512-byte stack. */
struct scratch {
	struct fs_path_key key0;
	__u8 pad0[12]; /* the dot-segment scan reads one word past the path */
	struct fs_path_key key1;
	__u8 pad1[12];
	char build[2 * FS_PATH_LEN]; /* a variable offset below FS_PATH_LEN plus a FS_PATH_LEN read fits */
	struct dentry *dirs[FS_MAX_DEPTH];
	__u8 blank[sizeof(struct pending)]; /* never written: zeroes for a fresh pending entry */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fs_path_key);
	__type(value, __u32); /* enum fs_file_watch */
} watched_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* thread id */
	__type(value, struct pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FS_FILE_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);
	if (value)
		(*value)++;
}

static __always_inline void emit(struct fs_file_record *rec)
{
	__u64 queued = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	if (bpf_ringbuf_output(&events, rec, sizeof(*rec),
			       queued > WAKEUP_THRESHOLD ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP))
		count(FS_FILE_COUNTER_RINGBUF_RESERVE_FAILED);
}

#define ONES 0x0101010101010101ULL
#define LOWS 0x7f7f7f7f7f7f7f7fULL

/* 0x80 in every byte of x that is zero, 0 elsewhere (exact: no borrow between bytes). */
static __always_inline __u64 zero_bytes(__u64 x)
{
	return ~(((x & LOWS) + LOWS) | x | LOWS);
}

static __always_inline __u64 bytes_equal(__u64 x, __u8 c)
{
	return zero_bytes(x ^ (ONES * c));
}

/*
 * Whether path (n bytes including its NUL) has "//", "/./", "/../" or ends in "/." or "/..",
 * eight bytes at a time: this runs for every unwatched absolute path, so it must be cheap.
 * "/..x" also counts (harmless: user space re-checks); "/.ssh" does not.
 */
static __always_inline bool has_dot_segment(const __u8 *path, long n)
{
	for (int w = 0; w < FS_PATH_LEN / 8; w++) {
		long base = w * 8;
		if (base >= n - 1)
			break;
		__u64 w0 = *(const __u64 *)(path + base);
		__u64 w1 = *(const __u64 *)(path + base + 8);
		__u64 next1 = (w0 >> 8) | (w1 << 56);  /* byte i+1 in lane i */
		__u64 next2 = (w0 >> 16) | (w1 << 48); /* byte i+2 in lane i */
		__u64 hit = bytes_equal(w0, '/') &
			    (bytes_equal(next1, '/') |
			     (bytes_equal(next1, '.') &
			      (bytes_equal(next2, '/') | zero_bytes(next2) | bytes_equal(next2, '.'))));
		/* Lanes at or past the NUL hold stale bytes from earlier calls. */
		long valid = n - 1 - base;
		if (valid < 8)
			hit &= (1ULL << ((valid & 7) * 8)) - 1;
		if (hit)
			return true;
	}
	return false;
}

/* Hides a value from clang's range analysis, so a mask that the verifier needs is not dropped
 * as redundant (clang proves the bound on one register, the verifier checks another). */
#define OPAQUE(x) asm volatile("" : "+r"(x))

/* &s->build[pos], with pos masked below FS_PATH_LEN where the verifier sees it. */
static __always_inline char *build_at(struct scratch *s, __u32 pos)
{
	OPAQUE(pos);
	return &s->build[pos & (FS_PATH_LEN - 1)];
}

static __always_inline struct mount *real_mount(struct vfsmount *mnt)
{
	return (struct mount *)((char *)mnt - bpf_core_field_offset(struct mount, mnt));
}

/* State of the walk from a directory up to the process's root (a bpf_loop callback's context). */
struct walk {
	struct dentry *d;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	__u32 depth;
	__u32 reached;
};

/* State of joining the remembered names, top down. */
struct join {
	__u32 pos;
	__u32 depth;
};

static __always_inline struct scratch *scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch_map, &zero);
}

/* One step up, as d_path does: at a mount's root, over to where it is mounted; else to the parent. */
static long walk_step(__u64 i, struct walk *w)
{
	struct scratch *s = scratch();
	if (!s)
		return 1;
	/* Locals: BPF_CORE_READ on a field of our own struct would relocate against it. */
	struct dentry *d = w->d;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;
	if (d == w->root_dentry && vfsmnt == w->root_mnt) {
		w->reached = 1;
		return 1;
	}
	if (d == BPF_CORE_READ(vfsmnt, mnt_root)) {
		struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
		if (parent == mnt) { /* the namespace's root mount */
			w->reached = 1;
			return 1;
		}
		w->d = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = parent;
		w->vfsmnt = (struct vfsmount *)((char *)parent + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	if (w->depth >= FS_MAX_DEPTH)
		return 1;
	s->dirs[w->depth & (FS_MAX_DEPTH - 1)] = d;
	w->depth++;
	w->d = BPF_CORE_READ(d, d_parent);
	return 0;
}

/* Appends "/" and the name of level depth-1-i (the topmost first). */
static long join_step(__u64 i, struct join *j)
{
	struct scratch *s = scratch();
	if (!s || j->pos >= FS_PATH_LEN - 1)
		return 1;
	*build_at(s, j->pos) = '/';
	j->pos++;
	struct dentry *dir = s->dirs[(j->depth - 1 - i) & (FS_MAX_DEPTH - 1)];
	const unsigned char *name = BPF_CORE_READ(dir, d_name.name);
	long k = bpf_probe_read_kernel_str(build_at(s, j->pos), FS_PATH_LEN, name);
	if (k > 1)
		j->pos += k - 1;
	return 0;
}

/*
 * Joins the relative path in key to the directory it is relative to (the cwd or dirfd's file),
 * writing the absolute path back into key. Returns its length with NUL, or 0 when the directory
 * cannot be walked (bad fd, deeper than FS_MAX_DEPTH). The loops run under bpf_loop so the
 * verifier checks each step once instead of every combination of depth and length.
 */
static __always_inline long resolve_relative(struct scratch *s, struct fs_path_key *key, int dfd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	struct path root, base;
	BPF_CORE_READ_INTO(&root, fs, root);
	if (dfd == AT_FDCWD) {
		BPF_CORE_READ_INTO(&base, fs, pwd);
	} else {
		struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
		unsigned int max_fds = BPF_CORE_READ(fdt, max_fds);
		if (dfd < 0 || (unsigned int)dfd >= max_fds)
			return 0;
		struct file **fds = BPF_CORE_READ(fdt, fd);
		struct file *file = NULL;
		bpf_probe_read_kernel(&file, sizeof(file), &fds[dfd]);
		if (!file)
			return 0;
		BPF_CORE_READ_INTO(&base, file, f_path);
	}

	struct walk w = {
		.d = base.dentry,
		.vfsmnt = base.mnt,
		.mnt = real_mount(base.mnt),
		.root_dentry = root.dentry,
		.root_mnt = root.mnt,
	};
	bpf_loop(FS_MAX_DEPTH + FS_MAX_CROSSINGS, walk_step, &w, 0);
	if (!w.reached)
		return 0;

	/* A path that grows past FS_PATH_LEN is cut there (and flagged truncated by the caller). */
	struct join j = { .pos = 0, .depth = w.depth };
	bpf_loop(w.depth, join_step, &j, 0);
	__u32 pos = j.pos;
	if (pos < FS_PATH_LEN - 1) {
		*build_at(s, pos) = '/';
		pos++;
		long k = bpf_probe_read_kernel_str(build_at(s, pos), FS_PATH_LEN, key->path);
		if (k > 0)
			pos += k - 1;
	}
	if (pos > FS_PATH_LEN - 1)
		pos = FS_PATH_LEN - 1;
	*build_at(s, pos) = 0;
	bpf_probe_read_kernel(key->path, FS_PATH_LEN, s->build);
	return pos + 1;
}

/* check_path's answer, packed in an int: a global BPF function returns one scalar. */
#define CHECK_REPORT 1
#define CHECK_UNREADABLE 2
#define CHECK_STATUS_SHIFT 8

/*
 * Reads a path argument into scratch key0 (which == 0) or key1 (which == 1) and decides whether
 * the call must be reported: its longest watched prefix asks for this kind of call (want: an
 * fs_file_watch bit), or it has dot segments user space must resolve first. Returns CHECK_* bits with the fs_file_status bits to add shifted by
 * CHECK_STATUS_SHIFT. Global (not inlined): the verifier checks it once per program, not at
 * each of its up to four call sites.
 */
__noinline int check_path(int which, int dfd, __u64 upath, __u32 want)
{
	struct scratch *s = scratch();
	if (!s)
		return 0;
	struct fs_path_key *key = which ? &s->key1 : &s->key0;
	__u16 status = 0;
	long n = bpf_probe_read_user_str(key->path, FS_PATH_LEN, (const char *)upath);
	if (n <= 0) {
		key->path[0] = 0;
		return CHECK_UNREADABLE;
	}
	if (key->path[0] != '/') {
		n = resolve_relative(s, key, dfd);
		if (n <= 0) {
			key->path[0] = 0;
			count(FS_FILE_COUNTER_RELATIVE_UNRESOLVED);
			return 0;
		}
		status |= which ? FS_FILE_NEW_PATH_RESOLVED : FS_FILE_PATH_RESOLVED;
	}
	if (n >= FS_PATH_LEN)
		status |= which ? FS_FILE_NEW_PATH_TRUNCATED : FS_FILE_PATH_TRUNCATED;
	/* The key covers the NUL too, so an entry "/etc\0" matches exactly "/etc", and "/etc/"
	 * everything below it, but neither matches "/etcetera". */
	key->prefixlen = (n & (2 * FS_PATH_LEN - 1)) * 8;
	__u32 *watch = bpf_map_lookup_elem(&watched_prefixes, key);
	bool dots = has_dot_segment(key->path, n);
	if (dots)
		status |= FS_FILE_UNNORMALIZED;
	bool report = dots || (watch && (*watch & want));
	return (report ? CHECK_REPORT : 0) | (status << CHECK_STATUS_SHIFT);
}

static __always_inline __u16 open_op(__u64 flags)
{
	if (flags & O_CREAT)
		return FS_FILE_OP_CREATE;
	if (flags & (O_WRONLY | O_RDWR | O_TRUNC))
		return FS_FILE_OP_WRITE;
	return FS_FILE_OP_OPEN;
}

static int task_work_done(struct bpf_map *map, void *key, void *value);

/*
 * Delivers a held call with its result. A result for another syscall means it is not ours. A
 * path unread at entry is read and checked now; unwatched after all, the call is dropped.
 */
static __always_inline void deliver(struct pending *p, int syscall_nr, long result)
{
	if (p->unread) {
		struct scratch *s = scratch();
		if (!s)
			return;
		bool report = p->reported;
		int r;
		p->rec.status |= FS_FILE_READ_LATE;
		if (p->unread & 1) {
			r = check_path(0, p->dfd, (__u64)p->upath, p->want);
			if (r & CHECK_UNREADABLE)
				count(FS_FILE_COUNTER_PATH_UNREADABLE);
			report |= r & CHECK_REPORT;
			p->rec.status |= r >> CHECK_STATUS_SHIFT;
			bpf_probe_read_kernel_str(p->rec.path, FS_PATH_LEN, s->key0.path);
		}
		if (p->unread & 2) {
			r = check_path(1, p->dfd2, (__u64)p->upath2, p->want);
			if (r & CHECK_UNREADABLE)
				count(FS_FILE_COUNTER_PATH_UNREADABLE);
			report |= r & CHECK_REPORT;
			p->rec.status |= r >> CHECK_STATUS_SHIFT;
			bpf_probe_read_kernel_str(p->rec.new_path, FS_PATH_LEN, s->key1.path);
		}
		if (!report)
			return;
	}
	if (syscall_nr == (int)p->rec.syscall_nr) {
		p->rec.result = result;
	} else {
		p->rec.status |= FS_FILE_RESULT_UNKNOWN;
		count(FS_FILE_COUNTER_RESULT_UNKNOWN);
	}
	emit(&p->rec);
}

/*
 * The common entry path. path2 is the rename target (NULL otherwise); how is openat2's
 * struct open_how (NULL otherwise), which holds its flags.
 */
static __always_inline int on_enter(struct trace_event_raw_sys_enter *ctx, bool task_work, __u16 op,
				    int dfd, const char *path, int dfd2, const char *path2,
				    __u64 flags, __u32 mode, const struct open_how *how)
{
	struct scratch *s = scratch();
	if (!s)
		return 0;
	if (how) {
		/* openat2's flags live in user memory: read before deciding (openat2 is rare). */
		struct open_how h = {};
		bpf_probe_read_user(&h, sizeof(h), how);
		flags = h.flags;
		mode = h.mode;
		op = open_op(flags);
	}
	/* Reads and changes can be watched apart: "/etc/ld.so.cache" is read by every exec, while
	 * a write to it is an attack. */
	__u32 want = op == FS_FILE_OP_OPEN ? FS_FILE_WATCH_READS : FS_FILE_WATCH_CHANGES;
	int r0 = check_path(0, dfd, (__u64)path, want);
	int r1 = path2 ? check_path(1, dfd2, (__u64)path2, want) : 0;
	__u16 status = (r0 | r1) >> CHECK_STATUS_SHIFT;
	bool report = (r0 | r1) & CHECK_REPORT;
	/* Unreadable now (a path constant whose page was never touched): decide with the result. */
	if (!report && !((r0 | r1) & CHECK_UNREADABLE))
		return 0;

	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if (bpf_map_lookup_elem(&pending, &tid))
		count(FS_FILE_COUNTER_PENDING_REPLACED);
	if (bpf_map_update_elem(&pending, &tid, s->blank, BPF_ANY)) {
		count(FS_FILE_COUNTER_PENDING_FULL);
		return 0;
	}
	struct pending *p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fs_file_record *rec = &p->rec;
	rec->kind = FS_RECORD_FILE;
	rec->tgid = bpf_get_current_pid_tgid() >> 32;
	rec->pid = tid;
	rec->euid = BPF_CORE_READ(task, cred, euid.val);
	rec->timestamp_ns = bpf_ktime_get_ns();
	rec->cgroup_id = bpf_get_current_cgroup_id();
	rec->flags = flags;
	rec->mode = mode;
	rec->syscall_nr = (int)ctx->id; /* __syscall_nr is an int; the BTF struct says long */
	rec->op = op;
	rec->status = status;
	/* The process's name, not the calling thread's (as in tcp_lifecycle.bpf.c). */
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	bpf_probe_read_kernel_str(rec->comm, sizeof(rec->comm), &leader->comm);
	bpf_probe_read_kernel_str(rec->path, sizeof(rec->path), s->key0.path);
	if (path2)
		bpf_probe_read_kernel_str(rec->new_path, sizeof(rec->new_path), s->key1.path);
	p->upath = path;
	p->upath2 = path2;
	p->dfd = dfd;
	p->dfd2 = dfd2;
	p->want = want;
	p->unread = (r0 & CHECK_UNREADABLE ? 1 : 0) | (r1 & CHECK_UNREADABLE ? 2 : 0);
	p->reported = report;

	if (task_work &&
	    bpf_task_work_schedule_resume_impl(bpf_get_current_task_btf(), &p->tw, &pending, task_work_done, NULL)) {
		/* No result will come. A call held only for an unread path is dropped with it. */
		if (report) {
			rec->status |= FS_FILE_RESULT_UNKNOWN;
			count(FS_FILE_COUNTER_RESULT_UNKNOWN);
			emit(rec);
		}
		bpf_map_delete_elem(&pending, &tid);
	}
	return 0;
}

/*
 * Task work: runs as the thread returns to user space, right after the syscall, whose number and
 * return value are still in the saved registers. (If it ever ran later, after another syscall,
 * the number would differ and the record says "result unknown" rather than a wrong result.)
 */
static int task_work_done(struct bpf_map *map, void *key, void *value)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
#if defined(__TARGET_ARCH_x86)
	int nr = regs->orig_ax;
	long ret = regs->ax;
#elif defined(__TARGET_ARCH_arm64)
	int nr = regs->syscallno;
	long ret = regs->regs[0];
#else
#error "task_work_done: add this architecture's syscall number and return registers"
#endif
	deliver(value, nr, ret);
	bpf_map_delete_elem(&pending, key);
	return 0;
}

static __always_inline int on_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	deliver(p, (int)ctx->id, ctx->ret);
	bpf_map_delete_elem(&pending, &tid);
	return 0;
}

#define ARG_INT(n) ((int)ctx->args[n])
#define ARG_PTR(n) ((const char *)ctx->args[n])

static __always_inline int do_open(struct trace_event_raw_sys_enter *ctx, bool tw)
{
	return on_enter(ctx, tw, open_op(ctx->args[1]), AT_FDCWD, ARG_PTR(0), 0, NULL, ctx->args[1], ctx->args[2], NULL);
}

static __always_inline int do_creat(struct trace_event_raw_sys_enter *ctx, bool tw)
{
	return on_enter(ctx, tw, FS_FILE_OP_CREATE, AT_FDCWD, ARG_PTR(0), 0, NULL, O_CREAT | O_WRONLY | O_TRUNC,
			ctx->args[1], NULL);
}

static __always_inline int do_openat(struct trace_event_raw_sys_enter *ctx, bool tw)
{
	return on_enter(ctx, tw, open_op(ctx->args[2]), ARG_INT(0), ARG_PTR(1), 0, NULL, ctx->args[2], ctx->args[3], NULL);
}

static __always_inline int do_openat2(struct trace_event_raw_sys_enter *ctx, bool tw)
{
	return on_enter(ctx, tw, FS_FILE_OP_OPEN, ARG_INT(0), ARG_PTR(1), 0, NULL, 0, 0,
			(const struct open_how *)ctx->args[2]);
}

static __always_inline int do_unlink(struct trace_event_raw_sys_enter *ctx, bool tw)
{
	return on_enter(ctx, tw, FS_FILE_OP_UNLINK, AT_FDCWD, ARG_PTR(0), 0, NULL, 0, 0, NULL);
}

static __always_inline int do_unlinkat(struct trace_event_raw_sys_enter *ctx, bool tw)
{
	return on_enter(ctx, tw, FS_FILE_OP_UNLINK, ARG_INT(0), ARG_PTR(1), 0, NULL, ctx->args[2], 0, NULL);
}

static __always_inline int do_rename(struct trace_event_raw_sys_enter *ctx, bool tw)
{
	return on_enter(ctx, tw, FS_FILE_OP_RENAME, AT_FDCWD, ARG_PTR(0), AT_FDCWD, ARG_PTR(1), 0, 0, NULL);
}

static __always_inline int do_renameat(struct trace_event_raw_sys_enter *ctx, bool tw)
{
	return on_enter(ctx, tw, FS_FILE_OP_RENAME, ARG_INT(0), ARG_PTR(1), ARG_INT(2), ARG_PTR(3), 0, 0, NULL);
}

static __always_inline int do_renameat2(struct trace_event_raw_sys_enter *ctx, bool tw)
{
	return on_enter(ctx, tw, FS_FILE_OP_RENAME, ARG_INT(0), ARG_PTR(1), ARG_INT(2), ARG_PTR(3), ctx->args[4], 0,
			NULL);
}

/* Three programs per syscall: the task-work entry, and the entry/exit pair of the fallback. */
#define FILE_SYSCALL(name)                                                                 \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                        \
	int tw_enter_##name(struct trace_event_raw_sys_enter *ctx) { return do_##name(ctx, true); } \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                        \
	int enter_##name(struct trace_event_raw_sys_enter *ctx) { return do_##name(ctx, false); } \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                         \
	int exit_##name(struct trace_event_raw_sys_exit *ctx) { return on_exit(ctx); }

FILE_SYSCALL(openat)
FILE_SYSCALL(openat2)
FILE_SYSCALL(open)
FILE_SYSCALL(creat)
FILE_SYSCALL(unlinkat)
FILE_SYSCALL(unlink)
FILE_SYSCALL(renameat2)
FILE_SYSCALL(renameat)
FILE_SYSCALL(rename)
