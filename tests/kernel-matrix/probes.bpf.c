// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Capture-path probes for the kernel matrix: one empty program per (signal, hook type), named
 * <signal>__<path>. The loader loads, attaches and fires each on its own and times the signal's
 * workload with it attached, so the matrix shows which capture paths each kernel really offers
 * (not which its config claims) and what each costs there. The sensor's own objects use the
 * tracepoint, tp_btf and cgroup_skb paths; kprobe, fentry/fexit, lsm and tc are the alternatives.
 *
 * The programs do nothing: what they cost is the price of the hook itself. No vmlinux.h needed.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PROBE(sec, name)                                                                           \
	SEC(sec)                                                                                   \
	int name(void *ctx)                                                                        \
	{                                                                                          \
		return 0;                                                                          \
	}

/* TCP state changes. */
PROBE("tracepoint/sock/inet_sock_set_state", tcp__tracepoint)
PROBE("tp_btf/inet_sock_set_state", tcp__tp_btf)
PROBE("raw_tp/inet_sock_set_state", tcp__raw_tp)
PROBE("kprobe/tcp_set_state", tcp__kprobe)
PROBE("fentry/tcp_set_state", tcp__fentry)

/* Process exec. */
PROBE("tracepoint/sched/sched_process_exec", exec__tracepoint)
PROBE("tp_btf/sched_process_exec", exec__tp_btf)
PROBE("kprobe/security_bprm_check", exec__kprobe)
PROBE("fentry/security_bprm_check", exec__fentry)
PROBE("lsm/bprm_check_security", exec__lsm)

/* Process exit. */
PROBE("tracepoint/sched/sched_process_exit", exit__tracepoint)
PROBE("tp_btf/sched_process_exit", exit__tp_btf)
PROBE("kprobe/do_exit", exit__kprobe)
PROBE("fentry/do_exit", exit__fentry)

/* File open (the file object uses the syscall tracepoints, with task work or the exit pair). */
PROBE("tracepoint/syscalls/sys_enter_openat", open__tracepoint)
PROBE("kprobe/do_sys_openat2", open__kprobe)
PROBE("fentry/do_sys_openat2", open__fentry)
PROBE("fexit/do_sys_openat2", open__fexit)
PROBE("lsm/file_open", open__lsm)

/* UDP packets of local sockets (DNS and UDP flows use cgroup_skb). Returning 1 lets them pass. */
SEC("cgroup_skb/egress")
int udp__cgroup_skb(struct __sk_buff *skb)
{
	return 1;
}
SEC("tc")
int udp__tc_egress(struct __sk_buff *skb)
{
	return 0; /* TC_ACT_OK */
}
PROBE("kprobe/udp_sendmsg", udp__kprobe)
PROBE("fentry/udp_sendmsg", udp__fentry)

/* Packet drops (the drops object uses the classic tracepoint). */
PROBE("tracepoint/skb/kfree_skb", drop__tracepoint)
PROBE("tp_btf/kfree_skb", drop__tp_btf)
PROBE("kprobe/kfree_skb_reason", drop__kprobe)
PROBE("fentry/kfree_skb_reason", drop__fentry)
