// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * UDP flows on cgroup_skb/egress and cgroup_skb/ingress.
 *
 * UDP has no connection state for a tracepoint to follow, so the flow is the packet stream of
 * one local socket's 5-tuple. Every UDP packet a socket in the attached cgroup subtree sends or
 * receives is added to an entry of an LRU hash keyed by (cgroup, local/remote address and port);
 * user space reads the totals on an interval and deletes idle entries. Nothing goes through a
 * ring buffer: a packet costs one hash lookup and two atomic adds.
 *
 * The programs observe only: they always return 1 (let the packet pass). TCP is left to the
 * TCP lifecycle program, which knows connection state; a TCP packet costs one header read here.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "flowsec.h"

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDP 17
#define UDP_HEADER_LEN 8
#define IPV6_HEADER_LEN 40

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* User space may resize it (bpf_map__set_max_entries) before load. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fs_udp_flow_key);
	__type(value, struct fs_udp_flow_stats);
} udp_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FS_UDP_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} udp_counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&udp_counters, &index);
	if (value)
		(*value)++;
}

static __always_inline void track(struct __sk_buff *skb, __u8 dir)
{
	struct fs_udp_flow_key key = {};
	__u32 l4_offset;

	/*
	 * In cgroup_skb programs the packet starts at the network header in both directions. Headers
	 * are read in place when they lie in the linear data (the usual case, and 60 ns cheaper per
	 * packet here than bpf_skb_load_bytes), else copied out with the helper.
	 */
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr copy;
		struct iphdr *ip = data;
		if ((void *)(ip + 1) > data_end) {
			if (bpf_skb_load_bytes(skb, 0, &copy, sizeof(copy)))
				return;
			ip = &copy;
		}
		if (ip->protocol != IPPROTO_UDP)
			return;
		l4_offset = ip->ihl * 4;
		key.family = AF_INET;
		__builtin_memcpy(key.local_addr, dir == FS_FLOW_DIR_EGRESS ? &ip->saddr : &ip->daddr, 4);
		__builtin_memcpy(key.remote_addr, dir == FS_FLOW_DIR_EGRESS ? &ip->daddr : &ip->saddr, 4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr copy;
		struct ipv6hdr *ip6 = data;
		if ((void *)(ip6 + 1) > data_end) {
			if (bpf_skb_load_bytes(skb, 0, &copy, sizeof(copy)))
				return;
			ip6 = &copy;
		}
		/* Extension headers before UDP are rare and not followed. */
		if (ip6->nexthdr != IPPROTO_UDP)
			return;
		l4_offset = IPV6_HEADER_LEN;
		key.family = AF_INET6;
		__builtin_memcpy(key.local_addr, dir == FS_FLOW_DIR_EGRESS ? &ip6->saddr : &ip6->daddr, 16);
		__builtin_memcpy(key.remote_addr, dir == FS_FLOW_DIR_EGRESS ? &ip6->daddr : &ip6->saddr, 16);
	} else {
		return;
	}

	__be16 copied_ports[2];
	__be16 *ports = data + (l4_offset & 0x3f); /* ihl * 4 <= 60: the mask tells the verifier */
	if ((void *)(ports + 2) > data_end) {
		if (bpf_skb_load_bytes(skb, l4_offset, copied_ports, sizeof(copied_ports))) {
			count(FS_UDP_COUNTER_UNPARSED);
			return;
		}
		ports = copied_ports;
	}
	key.protocol = IPPROTO_UDP;
	key.local_port = bpf_ntohs(dir == FS_FLOW_DIR_EGRESS ? ports[0] : ports[1]);
	key.remote_port = bpf_ntohs(dir == FS_FLOW_DIR_EGRESS ? ports[1] : ports[0]);
	key.cgroup_id = bpf_skb_cgroup_id(skb);

	/* A UDP GSO skb carries gso_segs datagrams behind one header; others count once. */
	__u64 packets = skb->gso_segs > 1 ? skb->gso_segs : 1;
	__u32 headers = l4_offset + UDP_HEADER_LEN;
	__u64 bytes = skb->len > headers ? skb->len - headers : 0;
	__u64 now = bpf_ktime_get_ns();

	struct fs_udp_flow_stats *stats = bpf_map_lookup_elem(&udp_flows, &key);
	if (!stats) {
		struct fs_udp_flow_stats fresh = {};
		fresh.first_ns = now;
		fresh.last_ns = now;
		fresh.first_dir = dir;
		if (dir == FS_FLOW_DIR_EGRESS) {
			fresh.bytes_egress = bytes;
			fresh.packets_egress = packets;
		} else {
			fresh.bytes_ingress = bytes;
			fresh.packets_ingress = packets;
		}
		if (bpf_map_update_elem(&udp_flows, &key, &fresh, BPF_NOEXIST) == 0) {
			count(FS_UDP_COUNTER_INSERTS);
			return;
		}
		/* Another CPU created it first (or the map refused): add to whatever is there. */
		stats = bpf_map_lookup_elem(&udp_flows, &key);
		if (!stats) {
			count(FS_UDP_COUNTER_INSERT_FAILED);
			return;
		}
	}
	/* Atomic: egress and ingress of one flow, or two threads on one socket, run on different CPUs. */
	if (dir == FS_FLOW_DIR_EGRESS) {
		__sync_fetch_and_add(&stats->bytes_egress, bytes);
		__sync_fetch_and_add(&stats->packets_egress, packets);
	} else {
		__sync_fetch_and_add(&stats->bytes_ingress, bytes);
		__sync_fetch_and_add(&stats->packets_ingress, packets);
	}
	/* Racing writers store nearly the same time; the idle check needs no more precision. */
	stats->last_ns = now;
}

SEC("cgroup_skb/egress")
int udp_egress(struct __sk_buff *skb)
{
	track(skb, FS_FLOW_DIR_EGRESS);
	return 1;
}

SEC("cgroup_skb/ingress")
int udp_ingress(struct __sk_buff *skb)
{
	track(skb, FS_FLOW_DIR_INGRESS);
	return 1;
}
