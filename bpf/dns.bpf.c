// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * DNS over UDP and TCP on cgroup_skb/egress and cgroup_skb/ingress.
 *
 * Attached to a cgroup v2 directory (the root by default, so every socket on the node is
 * covered), the programs see each packet of a local socket after the IP stack has built it
 * (egress) or delivered it (ingress): no reassembly, no L2 header, and the socket is known. For
 * UDP from or to port 53 they copy the start of the DNS message (FS_DNS_MAX_PAYLOAD bytes) with
 * the addresses, ports, socket cgroup and owning process into a ring buffer record. Parsing
 * happens in user space, where hostile input can be handled without verifier limits.
 *
 * They only observe: both always return 1 (allow).
 *
 * Process attribution: cgroup_skb/egress runs in the sending task's context for UDP (sendmsg →
 * ip_output), so bpf_get_current_pid_tgid() names the sender there; it is trusted only when the
 * current task's cgroup is the socket's cgroup (a reinjected or otherwise deferred packet runs in
 * someone else's context). Ingress runs in softirq, where "current" is whoever was interrupted, so
 * there (and on an egress that failed the check) the owner comes from a socket-cookie → process
 * map filled on trusted egress: a resolver sends its query before the answer arrives. A socket
 * that has not sent yet (a server's first query) gets tgid 0. The socket's cgroup
 * (bpf_skb_cgroup_id) is known in both directions.
 *
 * Two egress programs, one loaded (the sensor's DnsEgressPrograms.Choose picks): dns_egress asks
 * the helpers bpf_get_current_pid_tgid/bpf_get_current_cgroup_id, which cgroup_skb programs may
 * not call on older kernels (Linux 6.1); dns_egress_task_read reads the same facts from
 * bpf_get_current_task() with CO-RE reads (task->tgid, ->pid, ->group_leader->comm,
 * ->cgroups->dfl_cgrp->kn->id), which those kernels allow. Both write the same record.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "flowsec.h"

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define DNS_PORT 53
#define UDP_HEADER_LEN 8
/* IPv6 extension headers walked before giving up (hop-by-hop, routing, destination options). */
#define MAX_IPV6_EXT_HEADERS 4

/* Wake the consumer only when this much is queued; otherwise it drains on its own interval. */
#define WAKEUP_THRESHOLD (256 * 1024)

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Referenced so the record layout lands in the object's BTF, where the layout test reads it. */
struct fs_dns_record *unused_fs_dns_record __attribute__((unused));

struct sock_owner {
	__u32 tgid;
	__u32 pid;
	char comm[FS_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} events SEC(".maps");

/* Socket cookie → process that last sent on it. Cookies are never reused, so stale entries are
 * harmless and simply age out of the LRU. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct sock_owner);
} owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FS_DNS_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);
	if (value)
		(*value)++;
}

struct packet {
	__u32 l4_offset;
	__u32 payload_offset; /* first byte of the DNS data (after the UDP or TCP header) */
	__u32 message_len;    /* UDP: length from the UDP header; TCP: the segment's payload */
	__u32 tcp_seq;        /* TCP: sequence number of the first payload byte */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 l4_proto;
	__u8 saddr[16];
	__u8 daddr[16];
};

/* Finds the UDP or TCP header of an IPv4 or IPv6 packet; 0 when this is neither or unreadable. */
static __always_inline int parse(struct __sk_buff *skb, struct packet *p)
{
	__u8 next;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 0;
		/* A non-first fragment has no UDP header (cgroup hooks normally see whole datagrams). */
		if ((ip.protocol != IPPROTO_UDP && ip.protocol != IPPROTO_TCP) || ip.ihl < 5 || (ip.frag_off & bpf_htons(0x1fff)))
			return 0;
		next = ip.protocol;
		p->family = AF_INET;
		p->l4_offset = ip.ihl * 4;
		__builtin_memcpy(p->saddr, &ip.saddr, 4);
		__builtin_memcpy(p->daddr, &ip.daddr, 4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 0;
		p->family = AF_INET6;
		p->l4_offset = sizeof(ip6);
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		next = ip6.nexthdr;
#pragma unroll
		for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
			if (next != 0 /* hop-by-hop */ && next != 43 /* routing */ && next != 60 /* dst opts */)
				break;
			__u8 ext[2];
			if (bpf_skb_load_bytes(skb, p->l4_offset, ext, sizeof(ext)))
				return 0;
			next = ext[0];
			p->l4_offset += (ext[1] + 1) * 8;
		}
		if (next != IPPROTO_UDP && next != IPPROTO_TCP)
			return 0;
	} else {
		return 0;
	}
	p->l4_proto = next;
	if (next == IPPROTO_TCP) {
		struct tcphdr tcp;
		if (bpf_skb_load_bytes(skb, p->l4_offset, &tcp, sizeof(tcp)))
			return 0;
		p->sport = bpf_ntohs(tcp.source);
		p->dport = bpf_ntohs(tcp.dest);
		p->tcp_seq = bpf_ntohl(tcp.seq);
		p->payload_offset = p->l4_offset + tcp.doff * 4;
		p->message_len = skb->len > p->payload_offset ? skb->len - p->payload_offset : 0;
		return 1;
	}
	struct udphdr udp;
	if (bpf_skb_load_bytes(skb, p->l4_offset, &udp, sizeof(udp)))
		return 0;
	p->sport = bpf_ntohs(udp.source);
	p->dport = bpf_ntohs(udp.dest);
	__u16 udp_len = bpf_ntohs(udp.len);
	p->payload_offset = p->l4_offset + UDP_HEADER_LEN;
	p->message_len = udp_len > UDP_HEADER_LEN ? udp_len - UDP_HEADER_LEN : 0;
	return 1;
}

/*
 * Where a TCP segment's payload starts in its direction's byte stream, so user space can place
 * segments (retransmits, gaps, a connection first seen mid-way) without guessing: the stream's
 * first sequence number is rcv_nxt - bytes_received (ingress) or snd_una - bytes_acked (egress),
 * plus one on egress of an actively opened socket, whose bytes_acked counts the acknowledged SYN
 * (a DNS client: the remote port is 53); an accepted socket starts at snd_una = ISN + 1.
 */
static __always_inline __u32 tcp_stream_offset(struct bpf_sock *sk, __u32 seq, __u8 direction, __u16 local_port)
{
	struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
	if (!tp)
		return 0;
	if (direction == FS_DNS_INGRESS)
		return seq - (tp->rcv_nxt - (__u32)tp->bytes_received);
	__u32 first = tp->snd_una - (__u32)tp->bytes_acked + (local_port != DNS_PORT ? 1 : 0);
	return seq - first;
}

/* Where the egress program learns the sending process (compile-time constant per program). */
enum owner_source {
	OWNER_FROM_MAP,       /* ingress: the socket-cookie map only */
	OWNER_FROM_HELPERS,   /* bpf_get_current_pid_tgid + bpf_get_current_cgroup_id */
	OWNER_FROM_TASK_READ, /* bpf_get_current_task + CO-RE reads of the task */
};

/* Fills *owner from the current task when it runs in the socket's cgroup (then it is the sender). */
static __always_inline int current_sender(enum owner_source source, __u64 cgroup_id, struct sock_owner *owner)
{
	if (source == OWNER_FROM_HELPERS) {
		if (bpf_get_current_cgroup_id() != cgroup_id)
			return 0;
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		owner->tgid = pid_tgid >> 32;
		owner->pid = (__u32)pid_tgid;
		/* The process's name, not the calling thread's (resolvers run on worker threads). */
		struct task_struct *task = bpf_get_current_task_btf();
		bpf_probe_read_kernel_str(owner->comm, sizeof(owner->comm), &task->group_leader->comm);
		return 1;
	}
	if (source == OWNER_FROM_TASK_READ) {
		/* What bpf_get_current_cgroup_id returns: the task's cgroup on the default (v2) hierarchy. */
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		if (BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id) != cgroup_id)
			return 0;
		owner->tgid = BPF_CORE_READ(task, tgid);
		owner->pid = BPF_CORE_READ(task, pid);
		struct task_struct *leader = BPF_CORE_READ(task, group_leader);
		bpf_core_read_str(owner->comm, sizeof(owner->comm), &leader->comm);
		return 1;
	}
	return 0;
}

static __always_inline void capture(struct __sk_buff *skb, __u8 direction, enum owner_source source)
{
	/* Cheapest filter first, on the socket: other traffic leaves after one helper call, no packet read. */
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return;
	/* Ports are readable on any socket, full or not: a connected socket that is not DNS on either
	 * end (most packets of a busy node) leaves here, before the bpf_sk_fullsock call below. */
	if (sk->dst_port != 0 && sk->dst_port != bpf_htons(DNS_PORT) && sk->src_port != DNS_PORT)
		return;
	sk = bpf_sk_fullsock(sk);
	if (!sk || (sk->protocol != IPPROTO_UDP && sk->protocol != IPPROTO_TCP))
		return;
	/* A connected socket's ports are its packets' ports: one that is not DNS on either end (QUIC,
	 * RTP, HTTPS, ...) leaves without a single header read. Unconnected UDP sockets (dst_port 0)
	 * can send to or receive from port 53 on any local port, so their packets are read below. A
	 * TCP socket is always connected (a listener's SYNs carry no payload). */
	__u16 remote_port = bpf_ntohs(sk->dst_port);
	if ((remote_port != 0 || sk->protocol == IPPROTO_TCP) && remote_port != DNS_PORT && sk->src_port != DNS_PORT)
		return;

	struct packet p = {};
	if (!parse(skb, &p) || p.l4_proto != sk->protocol || (p.sport != DNS_PORT && p.dport != DNS_PORT))
		return;
	/* Handshake, pure ACKs and FINs carry no DNS bytes. */
	if (p.l4_proto == IPPROTO_TCP && p.message_len == 0)
		return;

	__u64 cookie = bpf_get_socket_cookie(skb);
	__u64 cgroup_id = bpf_skb_cgroup_id(skb);
	struct sock_owner owner = {};
	struct sock_owner *known = 0;
	if (current_sender(source, cgroup_id, &owner)) {
		if (owner.tgid)
			bpf_map_update_elem(&owners, &cookie, &owner, BPF_ANY);
		known = &owner;
	} else {
		/* Ingress, or egress outside the sender's context: whoever last sent on this socket. */
		known = bpf_map_lookup_elem(&owners, &cookie);
	}

	struct fs_dns_record *rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
	if (!rec) {
		count(FS_DNS_COUNTER_RINGBUF_RESERVE_FAILED);
		return;
	}
	rec->kind = FS_RECORD_DNS;
	rec->family = p.family;
	rec->direction = direction;
	rec->protocol = p.l4_proto;
	rec->timestamp_ns = bpf_ktime_get_ns();
	rec->cgroup_id = cgroup_id;
	rec->sock_cookie = cookie;
	__builtin_memcpy(rec->saddr, p.saddr, sizeof(rec->saddr));
	__builtin_memcpy(rec->daddr, p.daddr, sizeof(rec->daddr));
	rec->sport = p.sport;
	rec->dport = p.dport;
	rec->ifindex = skb->ifindex;
	rec->tcp_offset = p.l4_proto == IPPROTO_TCP ? tcp_stream_offset(sk, p.tcp_seq, direction, sk->src_port) : 0;
	if (known && known->tgid) {
		rec->tgid = known->tgid;
		rec->pid = known->pid;
		__builtin_memcpy(rec->comm, known->comm, sizeof(rec->comm));
	} else {
		rec->tgid = 0;
		rec->pid = 0;
		__builtin_memset(rec->comm, 0, sizeof(rec->comm));
	}

	/* The UDP header's length may lie; never read past the packet either. */
	__u64 payload_offset = p.payload_offset;
	__u64 message_len = p.message_len > 0xffff ? 0xffff : p.message_len;
	__u64 skb_len = skb->len;
	__u64 available = skb_len > payload_offset ? skb_len - payload_offset : 0;
	__u64 n = message_len < available ? message_len : available;
	if (n > FS_DNS_MAX_PAYLOAD) {
		n = FS_DNS_MAX_PAYLOAD;
		count(FS_DNS_COUNTER_PAYLOAD_TRUNCATED);
	}
	rec->payload_len = message_len;
	if (n > 0 && n <= FS_DNS_MAX_PAYLOAD) {
		/* The mask gives the verifier a range it can prove on every kernel (1..512): older
		 * verifiers (6.1, 6.12) reject the plain bounds check as a possibly zero-sized read. */
		__u32 len = ((n - 1) & (FS_DNS_MAX_PAYLOAD - 1)) + 1;
		if (bpf_skb_load_bytes(skb, payload_offset, rec->payload, len)) {
			count(FS_DNS_COUNTER_LOAD_FAILED);
			n = 0;
		}
	} else {
		n = 0;
	}
	rec->captured_len = n;

	/* An answer arriving for a local client names the address it is about to connect to: wake
	 * the reader now (a few µs, once per lookup) rather than within its poll interval, so the
	 * name is in the sensor's cache before that connection's flow is exported. */
	bool answer_in = direction == FS_DNS_INGRESS && p.sport == DNS_PORT;
	__u64 queued = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(rec, answer_in || queued > WAKEUP_THRESHOLD ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

SEC("cgroup_skb/egress")
int dns_egress(struct __sk_buff *skb)
{
	capture(skb, FS_DNS_EGRESS, OWNER_FROM_HELPERS);
	return 1;
}

/* The same as dns_egress for kernels whose cgroup_skb programs lack the current-task helpers. */
SEC("cgroup_skb/egress")
int dns_egress_task_read(struct __sk_buff *skb)
{
	capture(skb, FS_DNS_EGRESS, OWNER_FROM_TASK_READ);
	return 1;
}

SEC("cgroup_skb/ingress")
int dns_ingress(struct __sk_buff *skb)
{
	capture(skb, FS_DNS_INGRESS, OWNER_FROM_MAP);
	return 1;
}
