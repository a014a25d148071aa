// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The floor for the overhead benchmark: empty programs on the same tracepoints the sensor uses, attached the same way
 * (empty_cgroup_skb.bpf.c has the cgroup hooks). What these cost is the price of being attached
 * at all, which no eBPF tool can go below; the sensor's overhead is judged against it. Never
 * loaded by the sensor itself.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EMPTY(section, name)           \
	SEC(section)                   \
	int empty_##name(void *ctx)    \
	{                              \
		return 0;              \
	}

EMPTY("tp_btf/inet_sock_set_state", inet_sock_set_state)
EMPTY("tp_btf/kfree_skb", kfree_skb)
EMPTY("tp_btf/sched_process_exec", sched_process_exec)
EMPTY("tracepoint/sched/sched_process_exit", sched_process_exit)
EMPTY("tracepoint/syscalls/sys_enter_openat", openat)
EMPTY("tracepoint/syscalls/sys_enter_openat2", openat2)
EMPTY("tracepoint/syscalls/sys_enter_open", open)
EMPTY("tracepoint/syscalls/sys_enter_creat", creat)
EMPTY("tracepoint/syscalls/sys_enter_unlinkat", unlinkat)
EMPTY("tracepoint/syscalls/sys_enter_unlink", unlink)
EMPTY("tracepoint/syscalls/sys_enter_renameat2", renameat2)
EMPTY("tracepoint/syscalls/sys_enter_renameat", renameat)
EMPTY("tracepoint/syscalls/sys_enter_rename", rename)
