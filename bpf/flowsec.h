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
	/* 1 was FS_RECORD_TCP_OPEN: the socket table holds what it carried (struct fs_tcp_socket) */
	FS_RECORD_TCP_CLOSE = 2, /* connection reached CLOSE (normally, refused, reset or timed out) */
};

/* Indexes into the per-CPU counter array: every place the kernel side can lose an event. */
enum fs_counter {
	FS_COUNTER_RINGBUF_RESERVE_FAILED = 0,
	FS_COUNTER_SOCKET_TABLE_FULL = 1,
	FS_COUNTER_MAX = 8,
};

/*
 * What the kernel keeps per TCP socket: the value of tcp_lifecycle's `sockets` map, keyed by the
 * socket's kernel address (the records' sock_id). Created at connect() (SYN_SENT) or when an
 * accepted socket is established; the tuple is filled in at ESTABLISHED, and then `established`
 * set; deleted at close, after the close record copied it. User space scans the map to report
 * connections that stay open ("established" flows) instead of receiving a record per open.
 * Process attribution is captured in process context (connect() for the side that initiated,
 * close() for the side that accepted), never from softirq context, where the current task is
 * whoever happened to be running.
 */
struct fs_tcp_socket {
	__u64 start_ns;        /* connect() or, for an accepted socket, ESTABLISHED (bpf_ktime_get_ns()) */
	__u64 cgroup_id;       /* cgroup v2 id of the owner; 0 while not known */
	__u32 tgid;            /* owner's process id; 0 while not known (an accepted socket until close) */
	__u32 pid;             /* owner's thread id */
	__u8 saddr[16];        /* local address; IPv4 uses the first 4 bytes; set at ESTABLISHED */
	__u8 daddr[16];        /* remote address; set at ESTABLISHED */
	__u16 family;          /* AF_INET or AF_INET6; set at ESTABLISHED */
	__u16 sport;           /* local port, host byte order; set at ESTABLISHED */
	__u16 dport;           /* remote port, host byte order; set at ESTABLISHED */
	__u8 initiator;        /* 1 when this host called connect(), 0 when it accepted */
	__u8 first_state;      /* state the socket was first seen in: SYN_SENT or SYN_RECV */
	__u8 established;      /* 1 once the socket reached ESTABLISHED (written after the tuple) */
	__u8 reserved[7];
	char comm[FS_COMM_LEN]; /* owner's process name */
};

/*
 * One TCP connection: emitted once per socket, when it closes, with the socket table's entry
 * (owner, start, initiator) and the kernel's counters at that moment.
 */
struct fs_tcp_record {
	__u32 kind;            /* enum fs_record_kind */
	__u32 tgid;            /* process id; 0 when not known */
	__u32 pid;             /* thread id */
	__u16 family;          /* AF_INET or AF_INET6 */
	__u8 old_state;        /* TCP state before CLOSE: tells how the connection ended */
	__u8 new_state;        /* TCP_CLOSE */
	__u64 timestamp_ns;    /* bpf_ktime_get_ns() at the transition (CLOCK_MONOTONIC) */
	__u64 start_ns;        /* when the connection was first seen; 0 when not known */
	__u64 cgroup_id;       /* cgroup v2 id of the attributed process */
	__u64 sock_id;         /* kernel address of the socket (the socket table's key; reused once freed) */
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

/* ---- DNS (bpf/dns.bpf.c) ---- */

/* DNS message bytes copied per record: the classic UDP limit; longer (EDNS) messages are cut. */
#define FS_DNS_MAX_PAYLOAD 512

/* Record kind of the DNS object, kept clear of the small values other record kinds use. */
enum fs_dns_record_kind {
	FS_RECORD_DNS = 32, /* one UDP datagram from or to port 53 */
};

/* Indexes into the DNS object's own per-CPU counter array. */
enum fs_dns_counter {
	FS_DNS_COUNTER_RINGBUF_RESERVE_FAILED = 0, /* a record was lost: ring buffer full */
	FS_DNS_COUNTER_PAYLOAD_TRUNCATED = 1,      /* UDP message or TCP segment longer than FS_DNS_MAX_PAYLOAD: only its start copied */
	FS_DNS_COUNTER_LOAD_FAILED = 2,            /* bpf_skb_load_bytes failed: record sent without payload */
	FS_DNS_COUNTER_MAX = 4,
};

/* Which hook saw the packet, from the local socket's point of view. */
enum fs_dns_direction {
	FS_DNS_INGRESS = 0, /* delivered to a local socket */
	FS_DNS_EGRESS = 1,  /* sent by a local socket */
};

/*
 * One DNS message over UDP, or one TCP segment with payload to or from port 53 (DNS over TCP: user
 * space reassembles the 2-byte length-prefixed messages per connection and direction, placing
 * each segment by tcp_offset), seen by cgroup_skb/ingress or cgroup_skb/egress. Addresses and ports
 * are the packet's own (source → destination), whichever side is local. The process is known on
 * egress (the sender's own context, checked against the socket's cgroup) and, on ingress, when the
 * same socket has sent before (remembered by socket cookie); otherwise tgid is 0.
 */
struct fs_dns_record {
	__u32 kind;            /* FS_RECORD_DNS */
	__u32 tgid;            /* process id of the local socket's owner; 0 when not known */
	__u32 pid;             /* thread id; 0 when not known */
	__u16 family;          /* AF_INET or AF_INET6 */
	__u8 direction;        /* enum fs_dns_direction */
	__u8 protocol;         /* IPPROTO_UDP or IPPROTO_TCP */
	__u64 timestamp_ns;    /* bpf_ktime_get_ns() when the hook ran (CLOCK_MONOTONIC) */
	__u64 cgroup_id;       /* cgroup v2 id of the local socket (bpf_skb_cgroup_id) */
	__u64 sock_cookie;     /* bpf_get_socket_cookie() of the local socket */
	__u8 saddr[16];        /* packet source address; IPv4 uses the first 4 bytes */
	__u8 daddr[16];        /* packet destination address */
	__u16 sport;           /* packet source port, host byte order */
	__u16 dport;           /* packet destination port, host byte order */
	__u16 payload_len;     /* UDP: DNS message length from the UDP header; TCP: segment payload length (max 65535) */
	__u16 captured_len;    /* bytes of the message in payload[] (<= FS_DNS_MAX_PAYLOAD) */
	__u32 ifindex;         /* skb->ifindex */
	__u32 tcp_offset;      /* TCP: offset of the payload's first byte in this direction's byte stream (0 = first byte); UDP: 0 */
	char comm[FS_COMM_LEN]; /* process name (thread group leader); empty when not known */
	__u8 payload[FS_DNS_MAX_PAYLOAD];
};

/* ---- UDP flows (udp_flows.bpf.c) and packet drops (drops.bpf.c): per-key aggregates in LRU
 * hash maps that user space drains on an interval, so a packet costs a map update, never a
 * ring-buffer record. ---- */

/* Which way a packet went, seen from this host. */
enum fs_flow_dir {
	FS_FLOW_DIR_EGRESS = 1,  /* sent by a local socket (or, for drops, generated locally) */
	FS_FLOW_DIR_INGRESS = 2, /* received from a device */
};

/* Indexes into udp_flows.bpf.c's per-CPU udp_counters map. */
enum fs_udp_counter {
	FS_UDP_COUNTER_INSERTS = 0,       /* flow entries created (compare with entries drained) */
	FS_UDP_COUNTER_INSERT_FAILED = 1, /* a packet's flow could be neither created nor found */
	FS_UDP_COUNTER_UNPARSED = 2,      /* UDP packets whose headers could not be read */
	FS_UDP_COUNTER_MAX = 4,
};

/* Key of the udp_flows map: one UDP flow of one local socket's cgroup. */
struct fs_udp_flow_key {
	__u64 cgroup_id;       /* cgroup v2 id of the local socket (bpf_skb_cgroup_id) */
	__u8 local_addr[16];   /* IPv4 uses the first 4 bytes, the rest is zero */
	__u8 remote_addr[16];
	__u16 local_port;      /* host byte order */
	__u16 remote_port;
	__u8 family;           /* AF_INET or AF_INET6 */
	__u8 protocol;         /* IPPROTO_UDP */
	__u16 reserved;
};

/* Value of the udp_flows map: running totals since the entry was created. */
struct fs_udp_flow_stats {
	__u64 first_ns;        /* bpf_ktime_get_ns() of the packet that created the entry */
	__u64 last_ns;         /* of the latest packet */
	__u64 bytes_egress;    /* UDP payload bytes sent by the local socket */
	__u64 bytes_ingress;   /* UDP payload bytes received */
	__u64 packets_egress;  /* datagrams (GSO segments counted one by one) */
	__u64 packets_ingress;
	__u8 first_dir;        /* enum fs_flow_dir of the packet that created the entry */
	__u8 reserved[7];
};

/* Indexes into drops.bpf.c's per-CPU drop_counters map. */
enum fs_drop_counter {
	FS_DROP_COUNTER_SEEN = 0,          /* kfree_skb with a real drop reason (all protocols; not payload-less TCP segments purged at socket teardown) */
	FS_DROP_COUNTER_INSERTS = 1,       /* aggregate entries created */
	FS_DROP_COUNTER_INSERT_FAILED = 2, /* a drop could be neither aggregated nor found */
	FS_DROP_COUNTER_NON_IP = 3,        /* drops without an IPv4/IPv6 header: counted only */
	FS_DROP_COUNTER_MAX = 4,
};

/* Key of the drops map: what was dropped, where, and why. Addresses are the packet's own. */
struct fs_drop_key {
	__u64 cgroup_id;       /* cgroup v2 id of the socket the skb belonged to; 0 when none */
	__u8 saddr[16];        /* IPv4 uses the first 4 bytes */
	__u8 daddr[16];
	__u16 sport;           /* host byte order; 0 when not TCP/UDP or not readable */
	__u16 dport;
	__u32 reason;          /* enum skb_drop_reason of the running kernel */
	__u32 netns;           /* inode of the network namespace; 0 when not known */
	__u8 family;           /* AF_INET or AF_INET6 */
	__u8 protocol;         /* IP protocol number */
	__u8 direction;        /* enum fs_flow_dir: egress when generated here (no input device) */
	__u8 reserved;
};

/* Value of the drops map: what was dropped under one key since the last drain. */
struct fs_drop_stats {
	__u64 first_ns;
	__u64 last_ns;
	__u64 packets;
	__u64 bytes;           /* skb->len, from the network header on */
	__u64 location;        /* kernel address of the latest kfree_skb call */
	__u32 ifindex;         /* device of the latest drop; 0 when none */
	__u32 reserved;
};

/* ---- Processes (bpf/process.bpf.c) ---- */

/* Bounds of an exec record: the path as passed to execve, and the start of the argument area. */
#define FS_EXE_LEN 256
#define FS_ARGS_LEN 1024

/* Record kinds of the process object, clear of the values other objects use. */
enum fs_process_record_kind {
	FS_RECORD_EXEC = 48, /* a process image was replaced (execve succeeded) */
	FS_RECORD_EXIT = 49, /* the last thread of a process exited */
};

/* Indexes into the process object's own per-CPU counter array. */
enum fs_process_counter {
	FS_PROCESS_COUNTER_RINGBUF_RESERVE_FAILED = 0, /* a record was lost: ring buffer full */
	FS_PROCESS_COUNTER_ARGS_UNREADABLE = 1,        /* exec record sent without arguments */
	FS_PROCESS_COUNTER_MAX = 4,
};

/* One successful execve, seen from the new image (sched_process_exec). */
struct fs_exec_record {
	__u32 kind;            /* FS_RECORD_EXEC */
	__u32 tgid;            /* process id */
	__u32 ppid;            /* real_parent's process id */
	__u32 uid;             /* real uid after exec */
	__u32 euid;            /* effective uid after exec (differs for setuid images) */
	__u32 argc;            /* argument count as execve received it */
	__u64 timestamp_ns;    /* bpf_ktime_get_ns() at exec (CLOCK_MONOTONIC) */
	__u64 start_ns;        /* task start (fork) time, CLOCK_MONOTONIC */
	__u64 cgroup_id;       /* cgroup v2 id */
	__u32 args_size;       /* bytes of the whole argument area (arg_end - arg_start) */
	__u16 args_len;        /* bytes copied into args: NUL-separated, at most FS_ARGS_LEN */
	__u16 exe_len;         /* bytes of exe including its NUL; FS_EXE_LEN when cut */
	char comm[FS_COMM_LEN];
	char exe[FS_EXE_LEN];  /* the filename execve was given (bprm->filename) */
	char args[FS_ARGS_LEN];
};

/* The end of a whole process: the thread that made the thread group dead (sched_process_exit). */
struct fs_exit_record {
	__u32 kind;            /* FS_RECORD_EXIT */
	__u32 tgid;
	__u32 ppid;            /* real_parent's process id at exit (a reaper after reparenting) */
	__u32 euid;
	__s32 exit_code;       /* wait status: exit status << 8, or the terminating signal (| 0x80 if core dumped) */
	__u32 reserved;
	__u64 timestamp_ns;    /* bpf_ktime_get_ns() at exit */
	__u64 start_ns;        /* the thread group leader's start (fork) time: lifetime = timestamp_ns - start_ns */
	__u64 cgroup_id;
	char comm[FS_COMM_LEN]; /* the thread group leader's name */
};

/* ---- File activity (bpf/file.bpf.c) ---- */

/* Path bytes per record and per watched-prefix key (an LPM trie key holds at most 256 bytes). */
#define FS_PATH_LEN 256

/* Record kind of the file object. */
enum fs_file_record_kind {
	FS_RECORD_FILE = 64, /* open/creat/unlink/rename of a watched path, with its result */
};

/* What a file record reports. Opens are classified by flags: O_CREAT → create, O_WRONLY, O_RDWR or O_TRUNC → write. */
enum fs_file_op {
	FS_FILE_OP_OPEN = 1,
	FS_FILE_OP_CREATE = 2,
	FS_FILE_OP_WRITE = 3,
	FS_FILE_OP_UNLINK = 4,
	FS_FILE_OP_RENAME = 5,
};

/* Bits of fs_file_record.status. */
enum fs_file_status {
	FS_FILE_RESULT_UNKNOWN = 1,        /* no syscall result: task work failed or ran after another syscall */
	FS_FILE_PATH_TRUNCATED = 2,        /* path longer than FS_PATH_LEN - 1 bytes: cut */
	FS_FILE_NEW_PATH_TRUNCATED = 4,
	FS_FILE_UNNORMALIZED = 8,          /* a path has "//", "/./" or "/../": user space normalizes and re-checks */
	FS_FILE_PATH_RESOLVED = 16,        /* path was relative: built from the cwd or dirfd directory */
	FS_FILE_NEW_PATH_RESOLVED = 32,
	FS_FILE_READ_LATE = 64,            /* a path was unreadable at entry (page not resident) and read after the call */
};

/* Indexes into the file object's own per-CPU counter array. */
enum fs_file_counter {
	FS_FILE_COUNTER_RINGBUF_RESERVE_FAILED = 0, /* a record was lost: ring buffer full */
	FS_FILE_COUNTER_PENDING_FULL = 1,           /* lost: no room to hold a call until its result */
	FS_FILE_COUNTER_PENDING_REPLACED = 2,       /* lost: a thread's earlier call never delivered its result */
	FS_FILE_COUNTER_RESULT_UNKNOWN = 3,         /* sent without a result (see FS_FILE_RESULT_UNKNOWN) */
	FS_FILE_COUNTER_RELATIVE_UNRESOLVED = 4,    /* relative path whose directory could not be walked: not checked */
	FS_FILE_COUNTER_PATH_UNREADABLE = 5,        /* path unreadable even after the call (bad pointer): not checked */
	FS_FILE_COUNTER_MAX = 8,
};

/* Value of the watched_prefixes LPM trie: which calls the longest matching prefix reports (bits). */
enum fs_file_watch {
	FS_FILE_WATCH_IGNORE = 0,  /* an excluded prefix inside a watched one */
	FS_FILE_WATCH_READS = 1,   /* opens for reading */
	FS_FILE_WATCH_CHANGES = 2, /* create, write, unlink, rename */
	FS_FILE_WATCH_REPORT = 3,  /* both */
};

/* Key of the watched_prefixes LPM trie: prefixlen in bits over path bytes (a NUL may end a key). */
struct fs_path_key {
	__u32 prefixlen;
	__u8 path[FS_PATH_LEN];
};

/* One syscall on a watched path, with its result. */
struct fs_file_record {
	__u32 kind;            /* FS_RECORD_FILE */
	__u32 tgid;
	__u32 pid;             /* thread id */
	__u32 euid;
	__u64 timestamp_ns;    /* bpf_ktime_get_ns() at syscall entry */
	__u64 cgroup_id;
	__s64 result;          /* the syscall's return value: fd or 0 on success, -errno on failure */
	__u64 flags;           /* open flags (openat2: how.flags), unlinkat or renameat2 flags */
	__u32 mode;            /* create mode of opens */
	__u32 syscall_nr;      /* the syscall, as the syscalls tracepoints number it */
	__u16 op;              /* enum fs_file_op */
	__u16 status;          /* enum fs_file_status bits */
	__u32 reserved;
	char comm[FS_COMM_LEN]; /* the thread group leader's name */
	char path[FS_PATH_LEN];     /* absolute: a relative path is joined to its directory */
	char new_path[FS_PATH_LEN]; /* rename target; empty otherwise */
};

#endif /* FLOWSEC_H */
