// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Packet drops on the kfree_skb tracepoint (attached as tp_btf), with the kernel's own drop reason.
 *
 * tp_btf rather than the classic tracepoint: most drops happen in softirq, and the kernel skips
 * a classic tracepoint program that fires while any kprobe or tracepoint program runs on that
 * CPU (see tcp_lifecycle.bpf.c). What tp_btf still skips is reported as drops_program_runs_lost.
 *
 * kfree_skb fires for every freed packet that was not "consumed", most of them with reason
 * NOT_SPECIFIED (plain kfree_skb() calls that are not drops anyone asked about). Those return
 * after one compare. Real drops are parsed (IPv4/IPv6 + TCP/UDP ports from skb->head) and
 * added to an LRU hash keyed by 5-tuple, reason, netns and socket cgroup, which user space
 * drains on an interval: a drop storm becomes counts in a few entries, not a flood of records.
 * Payload-less TCP segments purged when a socket is destroyed are left out (see
 * purged_without_payload): they happen once per connection and lose nothing.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "flowsec.h"

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IP_OFFSET_MASK 0x1FFF
#define IPV6_HEADER_LEN 40
#define NO_HEADER 0xFFFF

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct fs_drop_key);
	__type(value, struct fs_drop_stats);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FS_DROP_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} drop_counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&drop_counters, &index);
	if (value)
		(*value)++;
}

/* A real drop without an IPv4/IPv6 header: seen, and counted as such instead of reported. */
static __always_inline void count_non_ip(void)
{
	count(FS_DROP_COUNTER_SEEN);
	count(FS_DROP_COUNTER_NON_IP);
}

/* Ports of a TCP or UDP header at offset l4 of the linear data, when it lies there. */
static __always_inline void read_ports(struct fs_drop_key *key, unsigned char *head, __u32 l4, __u32 tail)
{
	if (key->protocol != IPPROTO_TCP && key->protocol != IPPROTO_UDP)
		return;
	if (l4 + 4 > tail)
		return;
	__be16 ports[2];
	if (bpf_probe_read_kernel(ports, sizeof(ports), head + l4))
		return;
	key->sport = bpf_ntohs(ports[0]);
	key->dport = bpf_ntohs(ports[1]);
}

/*
 * Whether this is a TCP segment without payload freed as SKB_DROP_REASON_QUEUE_PURGE: a socket
 * destroyed with segments still queued. Typically the peer's FIN reaching a socket the application
 * has already closed (FIN_WAIT2 -> TIME_WAIT), i.e. once for every connection the server closes
 * first: the FIN did its work and no data was lost, so it is not a drop anyone asked about (and
 * was a map entry plus an exported event per connection). Purged segments with payload still count.
 */
static __always_inline bool purged_without_payload(__u32 reason, __u8 protocol, unsigned char *head, __u32 l4,
						    __u32 tail, __u32 l4_len)
{
	if (!bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_QUEUE_PURGE) ||
	    reason != bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_QUEUE_PURGE) ||
	    protocol != IPPROTO_TCP || l4 + 13 > tail)
		return false;
	__u8 doff;
	if (bpf_probe_read_kernel(&doff, 1, head + l4 + 12))
		return false;
	return l4_len <= (__u32)(doff >> 4) * 4;
}

/* The cgroup v2 id of a full socket; 0 for request and time-wait sockets, which have none. */
static __always_inline __u64 socket_cgroup(struct sock *sk)
{
	if (!sk)
		return 0;
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		return 0;
	if (!bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return 0;
	return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

/*
 * The tracepoint's arguments: (skb, location) before 5.17, (skb, location, reason) from 5.17 and
 * (skb, location, reason, rx_sk) from 6.11. The classic tracepoint's entry struct gained its
 * reason and rx_sk fields in the same commits, so CO-RE on it says which arguments exist; the
 * branches reading the others are dead code libbpf resolves away before the verifier sees them.
 */
SEC("tp_btf/kfree_skb")
int handle_kfree_skb(unsigned long long *ctx)
{
	/* Kernels before 5.17 have no reason: every free looks alike, so there is nothing to report. */
	if (!bpf_core_field_exists(((struct trace_event_raw_kfree_skb *)0)->reason))
		return 0;
	__u32 reason = (__u32)ctx[2];
	/* NOT_DROPPED_YET, CONSUMED and NOT_SPECIFIED are normal frees; their values vary by kernel. */
	if (reason <= bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED))
		return 0;
	/* tp_btf types the skb: its scalar fields are plain loads, not a probe-read helper call each. */
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	__u16 ethertype = bpf_ntohs(skb->protocol);
	__u16 nh = skb->network_header;
	if (nh == NO_HEADER || (ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 && ethertype != 0)) {
		count_non_ip();
		return 0;
	}
	unsigned char *head = skb->head;
	__u32 tail = skb->tail;

	struct fs_drop_key key = {};
	__u8 first;
	if (bpf_probe_read_kernel(&first, 1, head + nh)) {
		count_non_ip();
		return 0;
	}
	if ((first >> 4) == 4) {
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) || ip.ihl < 5) {
			count_non_ip();
			return 0;
		}
		key.family = AF_INET;
		key.protocol = ip.protocol;
		__builtin_memcpy(key.saddr, &ip.saddr, 4);
		__builtin_memcpy(key.daddr, &ip.daddr, 4);
		/* A non-first fragment carries no ports. */
		if (!(bpf_ntohs(ip.frag_off) & IP_OFFSET_MASK)) {
			__u32 l4 = nh + ip.ihl * 4;
			__u16 total = bpf_ntohs(ip.tot_len);
			if (purged_without_payload(reason, ip.protocol, head, l4, tail, total > ip.ihl * 4 ? total - ip.ihl * 4 : 0))
				return 0;
			read_ports(&key, head, l4, tail);
		}
	} else if ((first >> 4) == 6) {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh)) {
			count_non_ip();
			return 0;
		}
		key.family = AF_INET6;
		key.protocol = ip6.nexthdr; /* extension headers are not followed */
		__builtin_memcpy(key.saddr, &ip6.saddr, 16);
		__builtin_memcpy(key.daddr, &ip6.daddr, 16);
		if (purged_without_payload(reason, ip6.nexthdr, head, nh + IPV6_HEADER_LEN, tail, bpf_ntohs(ip6.payload_len)))
			return 0;
		read_ports(&key, head, nh + IPV6_HEADER_LEN, tail);
	} else {
		count_non_ip();
		return 0;
	}
	/* Counted here, not on entry, so that purged empty segments (left above) are not "seen". */
	count(FS_DROP_COUNTER_SEEN);
	key.reason = reason;

	/* A packet that came in through a device has an input ifindex; one built here has none. */
	__u32 iif = skb->skb_iif;
	key.direction = iif ? FS_FLOW_DIR_INGRESS : FS_FLOW_DIR_EGRESS;
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	struct sock *sk = BPF_CORE_READ(skb, sk);
	if (!sk && bpf_core_field_exists(((struct trace_event_raw_kfree_skb *)0)->rx_sk))
		sk = (struct sock *)ctx[3];
	if (dev)
		key.netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	else if (sk)
		key.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	key.cgroup_id = socket_cgroup(sk);

	__u64 now = bpf_ktime_get_ns();
	/* skb->len counts from skb->data, which sits at L2, L3 or L4 depending on where the drop
	 * happened: count from the network header instead, so every drop point measures alike. */
	__s64 len = skb->len;
	unsigned char *data = skb->data;
	__s64 pulled = (__s64)(data - head) - nh;
	if (pulled > -256 && pulled < 256)
		len += pulled;
	if (len < 0)
		len = 0;
	__u32 ifindex = dev ? BPF_CORE_READ(dev, ifindex) : iif;
	__u64 location = ctx[1];

	struct fs_drop_stats *stats = bpf_map_lookup_elem(&drops, &key);
	if (!stats) {
		struct fs_drop_stats fresh = {};
		fresh.first_ns = now;
		fresh.last_ns = now;
		fresh.packets = 1;
		fresh.bytes = len;
		fresh.location = location;
		fresh.ifindex = ifindex;
		if (bpf_map_update_elem(&drops, &key, &fresh, BPF_NOEXIST) == 0) {
			count(FS_DROP_COUNTER_INSERTS);
			return 0;
		}
		stats = bpf_map_lookup_elem(&drops, &key);
		if (!stats) {
			count(FS_DROP_COUNTER_INSERT_FAILED);
			return 0;
		}
	}
	__sync_fetch_and_add(&stats->packets, 1);
	__sync_fetch_and_add(&stats->bytes, len);
	stats->last_ns = now;
	stats->location = location;
	stats->ifindex = ifindex;
	return 0;
}
