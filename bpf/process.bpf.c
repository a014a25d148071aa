// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Process lifecycle: one record per successful execve (tp_btf/sched_process_exec) and one per
 * process that ends (sched_process_exit, only for the thread that makes the thread group dead).
 *
 * Exec is read from the new image: by the time the tracepoint fires, comm, credentials and the
 * argument area already belong to it. Exit carries the leader's start time, so user space gets
 * the lifetime without having seen the start.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "flowsec.h"

/* Wake the consumer only when this much is queued; otherwise it drains on its own interval. */
#define WAKEUP_THRESHOLD (256 * 1024)

/* include/linux/sched/signal.h: set once a group exit (exit_group, fatal signal) has started. */
#define SIGNAL_GROUP_EXIT 0x00000004

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Referenced so the record layouts land in the object's BTF, where the layout test reads them. */
struct fs_exec_record *unused_fs_exec_record __attribute__((unused));
struct fs_exit_record *unused_fs_exit_record __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FS_PROCESS_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);
	if (value)
		(*value)++;
}

static __always_inline void submit(void *rec)
{
	__u64 queued = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(rec, queued > WAKEUP_THRESHOLD ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	struct fs_exec_record *rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
	if (!rec) {
		count(FS_PROCESS_COUNTER_RINGBUF_RESERVE_FAILED);
		return 0;
	}
	rec->kind = FS_RECORD_EXEC;
	rec->tgid = BPF_CORE_READ(task, tgid);
	rec->ppid = BPF_CORE_READ(task, real_parent, tgid);
	rec->uid = BPF_CORE_READ(task, cred, uid.val);
	rec->euid = BPF_CORE_READ(task, cred, euid.val);
	rec->argc = BPF_CORE_READ(bprm, argc);
	rec->timestamp_ns = bpf_ktime_get_ns();
	rec->start_ns = BPF_CORE_READ(task, start_time);
	rec->cgroup_id = bpf_get_current_cgroup_id();
	bpf_probe_read_kernel_str(rec->comm, sizeof(rec->comm), &task->comm);

	long exe_len = bpf_probe_read_kernel_str(rec->exe, sizeof(rec->exe), BPF_CORE_READ(bprm, filename));
	rec->exe_len = exe_len > 0 ? exe_len : 0;

	/* The argument area of the new image: NUL-separated strings on its stack, just written by
	 * execve and so resident. Only its start is copied; user space splits and bounds the list. */
	unsigned long arg_start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(task, mm, arg_end);
	__u64 size = arg_end > arg_start ? arg_end - arg_start : 0;
	rec->args_size = size > 0xffffffff ? 0xffffffff : size;
	__u32 len = size > FS_ARGS_LEN ? FS_ARGS_LEN : size;
	rec->args_len = 0;
	if (len > 0) {
		if (bpf_probe_read_user(rec->args, len, (const void *)arg_start) == 0)
			rec->args_len = len;
		else
			count(FS_PROCESS_COUNTER_ARGS_UNREADABLE);
	}
	submit(rec);
	return 0;
}

/*
 * A classic tracepoint rather than tp_btf: its CO-RE-relocatable context says whether the kernel
 * passes group_dead (6.16+). Older kernels get the same answer from signal->live, which the
 * exiting thread has just decremented; two threads exiting together may then both see zero, and
 * user space drops the second record of a process.
 */
SEC("tracepoint/sched/sched_process_exit")
int handle_exit(struct trace_event_raw_sched_process_exit *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	bool group_dead;
	if (bpf_core_field_exists(ctx->group_dead))
		group_dead = BPF_CORE_READ(ctx, group_dead);
	else
		group_dead = BPF_CORE_READ(task, signal, live.counter) == 0;
	if (!group_dead)
		return 0;

	struct fs_exit_record *rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
	if (!rec) {
		count(FS_PROCESS_COUNTER_RINGBUF_RESERVE_FAILED);
		return 0;
	}
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	rec->kind = FS_RECORD_EXIT;
	rec->tgid = BPF_CORE_READ(task, tgid);
	rec->ppid = BPF_CORE_READ(task, real_parent, tgid);
	rec->euid = BPF_CORE_READ(task, cred, euid.val);
	/* exit_group() and fatal signals store the process's status in signal->group_exit_code;
	 * otherwise (the last thread returned from main or called pthread_exit) it is this thread's. */
	unsigned int signal_flags = BPF_CORE_READ(task, signal, flags);
	rec->exit_code = (signal_flags & SIGNAL_GROUP_EXIT) ? BPF_CORE_READ(task, signal, group_exit_code)
							      : BPF_CORE_READ(task, exit_code);
	rec->reserved = 0;
	rec->timestamp_ns = bpf_ktime_get_ns();
	rec->start_ns = BPF_CORE_READ(leader, start_time);
	rec->cgroup_id = bpf_get_current_cgroup_id();
	bpf_probe_read_kernel_str(rec->comm, sizeof(rec->comm), &leader->comm);
	submit(rec);
	return 0;
}
