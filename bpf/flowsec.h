/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * flowsec.h: the records FlowSec's BPF programs hand to user space.
 *
 * This header is the single source of truth for kernel-to-user layouts. The C# mirrors live in
 * sensor/FlowSec.Sensor/Capture/KernelRecords.cs, and a test compares their sizes and offsets
 * with the BTF of the compiled objects, so the two cannot drift apart silently.
 * Fields are ordered so that no implicit padding exists.
 */
#ifndef FLOWSEC_H
#define FLOWSEC_H

#define FS_COMM_LEN 16

/* Every record starts with its kind, so one ring buffer can carry several record types. */
enum fs_record_kind {
	FS_RECORD_TCP_OPEN = 1,  /* connection reached ESTABLISHED */
	FS_RECORD_TCP_CLOSE = 2, /* connection reached CLOSE (normally, refused, reset or timed out) */
};

/* Indexes into the per-CPU counter array: every place the kernel side can lose an event. */
enum fs_counter {
	FS_COUNTER_RINGBUF_RESERVE_FAILED = 0,
	FS_COUNTER_SOCKET_TABLE_FULL = 1,
	FS_COUNTER_MAX = 8,
};

/*
 * One TCP connection lifecycle record: emitted when a connection is established and when it
 * closes. Process attribution is captured in process context (connect() for the side that
 * initiated, close() for the side that accepted), never from softirq context, where the current
 * task is whoever happened to be running.
 */
struct fs_tcp_record {
	__u32 kind;            /* enum fs_record_kind */
	__u32 tgid;            /* process id; 0 when not known */
	__u32 pid;             /* thread id */
	__u16 family;          /* AF_INET or AF_INET6 */
	__u8 old_state;        /* TCP state before the transition that emitted this record */
	__u8 new_state;        /* TCP state after it */
	__u64 timestamp_ns;    /* bpf_ktime_get_ns() at the transition (CLOCK_MONOTONIC) */
	__u64 start_ns;        /* when the connection was first seen; 0 when not known */
	__u64 cgroup_id;       /* cgroup v2 id of the attributed process */
	__u64 sock_id;         /* kernel address of the socket: joins open and close */
	__u8 saddr[16];        /* local address; IPv4 uses the first 4 bytes */
	__u8 daddr[16];        /* remote address */
	__u16 sport;           /* local port, host byte order */
	__u16 dport;           /* remote port, host byte order */
	__u8 initiator;        /* 1 when this host called connect(), 0 when it accepted */
	__u8 first_state;      /* first TCP state recorded for this socket */
	__u16 reserved;
	__u64 bytes_acked;     /* bytes sent and acknowledged (tcp_sock.bytes_acked) */
	__u64 bytes_received;  /* tcp_sock.bytes_received */
	__u32 segs_out;
	__u32 segs_in;
	__u32 srtt_us;         /* smoothed RTT in microseconds */
	__u32 total_retrans;
	char comm[FS_COMM_LEN];
};

#endif /* FLOWSEC_H */
