// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * TCP connection lifecycle on the inet_sock_set_state tracepoint, attached as tp_btf.
 *
 * The tracepoint fires about ten times per connection; shipping each to user space would cost
 * ring-buffer traffic for no information. Instead the program keeps per-socket state in an LRU
 * hash (`sockets`: owner, start, tuple; struct fs_tcp_socket) and emits one record per socket,
 * when it closes, with that state and the byte, segment, RTT and retransmit counters read from
 * tcp_sock at that moment. Connections that stay open are reported by user space scanning the
 * map, so an open needs no record of its own.
 *
 * Why tp_btf and not the classic tracepoint (they cost the same here, docs/kernel-matrix.md):
 * a classic tracepoint program shares one per-CPU "busy" flag with every kprobe and tracepoint
 * program on the machine, and the kernel silently skips it when a softirq changes a socket's
 * state while any of those runs on that CPU. Under a busy test suite that skipped 108 runs and
 * lost 81 of 1000 flows in a 500-connection burst. tp_btf programs are only skipped when they
 * interrupt themselves; what is still skipped is counted by the kernel (recursion_misses) and
 * reported as tcp_program_runs_lost.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "flowsec.h"

#define AF_INET 2
#define AF_INET6 10

/* Wake the consumer only when this much is queued; otherwise it drains on its own interval. */
#define WAKEUP_THRESHOLD (256 * 1024)

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Referenced so the layouts land in the object's BTF, where the layout test reads them. */
struct fs_tcp_record *unused_fs_tcp_record __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct fs_tcp_socket);
} sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FS_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);
	if (value)
		(*value)++;
}

static __always_inline void fill_owner_from_current(struct fs_tcp_socket *owner)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	owner->tgid = pid_tgid >> 32;
	owner->pid = (__u32)pid_tgid;
	owner->cgroup_id = bpf_get_current_cgroup_id();
	/* The process's name, not the calling thread's: bpf_get_current_comm() would give thread
	 * names such as ".NET TP Worker" or "tokio-runtime-w" for multi-threaded servers. */
	struct task_struct *task = bpf_get_current_task_btf();
	/* Two plain (BTF, fault-safe) 8-byte loads instead of a bpf_probe_read_kernel_str call:
	 * comm is kept NUL-padded to its 16 bytes (__set_task_comm), so a copy needs no string scan. */
	__builtin_memcpy(owner->comm, task->group_leader->comm, sizeof(owner->comm));
}

/*
 * What the classic tracepoint's entry holds (TP_STORE_ADDRS): ports in host order, inet_saddr
 * for IPv4, the socket's v6 addresses for IPv6. Written into the socket table's entry at
 * ESTABLISHED and into the close record (read again there: a refused connect never reached
 * ESTABLISHED, and a socket that predates the sensor has no entry).
 *
 * tp_btf hands the program a typed socket: fields are plain loads (CO-RE relocated, fault-safe)
 * rather than a bpf_probe_read_kernel call each, which is what made the first tp_btf version
 * cost more per run than the classic tracepoint, whose entry arrives filled in.
 */
static __always_inline void fill_tuple(const struct tcp_sock *tp, __u16 *family, __u8 *saddr, __u8 *daddr,
				       __u16 *sport, __u16 *dport)
{
	const struct inet_sock *inet = &tp->inet_conn.icsk_inet;
	const struct sock_common *common = &inet->sk.__sk_common;
	__u16 f = common->skc_family;
	*family = f;
	*sport = bpf_ntohs(inet->inet_sport);
	*dport = bpf_ntohs(common->skc_dport);
	if (f == AF_INET) {
		__builtin_memset(saddr, 0, 16);
		__builtin_memset(daddr, 0, 16);
		*(__u32 *)saddr = inet->inet_saddr;
		*(__u32 *)daddr = common->skc_daddr;
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)saddr, common, skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)daddr, common, skc_v6_daddr);
	}
}

#define FILL_TUPLE(dst, tp) fill_tuple(tp, &(dst)->family, (dst)->saddr, (dst)->daddr, &(dst)->sport, &(dst)->dport)

/* The one record of a socket: its table entry (owner, start; none when not known) and counters. */
static __always_inline void emit_close(const struct tcp_sock *tp, int oldstate,
				       const struct fs_tcp_socket *owner)
{
	struct fs_tcp_record *rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
	if (!rec) {
		count(FS_COUNTER_RINGBUF_RESERVE_FAILED);
		return;
	}
	rec->kind = FS_RECORD_TCP_CLOSE;
	rec->old_state = oldstate;
	rec->new_state = TCP_CLOSE;
	rec->timestamp_ns = bpf_ktime_get_ns();
	rec->sock_id = (__u64)tp;
	rec->reserved = 0;
	FILL_TUPLE(rec, tp);
	if (owner) {
		rec->tgid = owner->tgid;
		rec->pid = owner->pid;
		rec->start_ns = owner->start_ns;
		rec->cgroup_id = owner->cgroup_id;
		rec->initiator = owner->initiator;
		rec->first_state = owner->first_state;
		__builtin_memcpy(rec->comm, owner->comm, sizeof(rec->comm));
	} else {
		rec->tgid = 0;
		rec->pid = 0;
		rec->start_ns = 0;
		rec->cgroup_id = 0;
		rec->initiator = 0;
		rec->first_state = 0;
		__builtin_memset(rec->comm, 0, sizeof(rec->comm));
	}
	rec->bytes_acked = tp->bytes_acked;
	rec->bytes_received = tp->bytes_received;
	rec->segs_out = tp->segs_out;
	rec->segs_in = tp->segs_in;
	rec->srtt_us = tp->srtt_us >> 3;
	rec->total_retrans = tp->total_retrans;
	__u64 queued = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(rec, queued > WAKEUP_THRESHOLD ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_inet_sock_set_state, const struct sock *sk_ptr, int oldstate, int newstate)
{
	/* Half of a connection's ~10 transitions (CLOSE -> SYN_RECV, FIN_WAIT1 -> FIN_WAIT2,
	 * ESTABLISHED -> CLOSE_WAIT, ...) carry nothing for us: leave before any helper call. */
	if (newstate != TCP_SYN_SENT && newstate != TCP_ESTABLISHED && newstate != TCP_FIN_WAIT1 &&
	    newstate != TCP_LAST_ACK && newstate != TCP_CLOSE)
		return 0;
	/* NULL for anything but a TCP socket (the tracepoint also fires for SCTP, DCCP, MPTCP's own). */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk_ptr);
	if (!tp)
		return 0;
	__u64 sk = (__u64)sk_ptr;

	if (newstate == TCP_SYN_SENT) {
		/* connect(): we are in the connecting process. Ports are not assigned yet. */
		struct fs_tcp_socket owner = {};
		owner.start_ns = bpf_ktime_get_ns();
		owner.initiator = 1;
		owner.first_state = TCP_SYN_SENT;
		fill_owner_from_current(&owner);
		if (bpf_map_update_elem(&sockets, &sk, &owner, BPF_ANY))
			count(FS_COUNTER_SOCKET_TABLE_FULL);
		return 0;
	}

	if (newstate == TCP_ESTABLISHED) {
		/* A passive open (from SYN_RECV) never has an owner yet: an entry found for its address
		 * is a freed socket's whose close the kernel skipped, and must not name this one. */
		struct fs_tcp_socket *owner = oldstate == TCP_SYN_RECV ? 0 : bpf_map_lookup_elem(&sockets, &sk);
		if (owner) {
			FILL_TUPLE(owner, tp);
			/* A scan reading the entry meanwhile sees the flag only after the tuple. */
			barrier();
			owner->established = 1;
			return 0;
		}
		/* Passive open (in softirq: the current task is not the server; the owner is filled in
		 * when the server closes the socket, in process context), or a connect() whose SYN_SENT
		 * entry is missing (table full, run skipped, connect() before the sensor started). */
		struct fs_tcp_socket fresh = {};
		fresh.start_ns = bpf_ktime_get_ns();
		fresh.initiator = oldstate == TCP_SYN_SENT;
		fresh.first_state = oldstate;
		FILL_TUPLE(&fresh, tp);
		fresh.established = 1;
		if (bpf_map_update_elem(&sockets, &sk, &fresh, BPF_ANY))
			count(FS_COUNTER_SOCKET_TABLE_FULL);
		return 0;
	}

	if (newstate == TCP_FIN_WAIT1 || newstate == TCP_LAST_ACK) {
		/* Only a local close()/shutdown() enters these states: process context. */
		struct fs_tcp_socket *owner = bpf_map_lookup_elem(&sockets, &sk);
		if (owner && owner->tgid == 0)
			fill_owner_from_current(owner);
		return 0;
	}

	/* TCP_CLOSE */
	struct fs_tcp_socket *owner = bpf_map_lookup_elem(&sockets, &sk);
	/* A socket closed from LISTEN or never connected carries no flow. */
	if (!owner && (oldstate == TCP_LISTEN || oldstate == TCP_CLOSE))
		return 0;
	emit_close(tp, oldstate, owner);
	if (owner)
		bpf_map_delete_elem(&sockets, &sk);
	return 0;
}
