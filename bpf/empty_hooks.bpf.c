// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The floor for the overhead benchmark: empty programs on the same hooks the sensor uses. What
 * these cost is the price of being attached at all, which no eBPF tool can go below; the
 * sensor's overhead is judged against it. Never loaded by the sensor itself.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tracepoint/sock/inet_sock_set_state")
int empty_inet_sock_set_state(void *ctx)
{
	return 0;
}
