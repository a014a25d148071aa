// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The floor for the overhead benchmark, cgroup half: as many empty cgroup_skb programs as the
 * sensor attaches (UDP flows and DNS, each ingress and egress). They pass every packet.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup_skb/egress")
int empty_egress_1(struct __sk_buff *skb) { return 1; }

SEC("cgroup_skb/ingress")
int empty_ingress_1(struct __sk_buff *skb) { return 1; }

SEC("cgroup_skb/egress")
int empty_egress_2(struct __sk_buff *skb) { return 1; }

SEC("cgroup_skb/ingress")
int empty_ingress_2(struct __sk_buff *skb) { return 1; }
