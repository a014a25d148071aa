#!/usr/bin/python3
"""A gRPC peer written by others (Debian's python3-grpcio) calling the FlowSec relay.

Usage: relay_peer.py ADDRESS TOKEN GENERATED_DIR NODE PORT
Prints one JSON line per step; the C# test asserts on them.
"""
import json
import sys
import time

address, token, generated, node, port = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
sys.path.insert(0, generated)

import grpc  # noqa: E402
from flowsec.v1 import events_pb2, relay_pb2  # noqa: E402


def out(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


channel = grpc.insecure_channel(address)
get_status = channel.unary_unary(
    "/flowsec.v1.Observer/GetStatus",
    request_serializer=relay_pb2.StatusRequest.SerializeToString,
    response_deserializer=relay_pb2.StatusResponse.FromString)
push = channel.stream_stream(
    "/flowsec.v1.Ingest/Push",
    request_serializer=relay_pb2.EventBatch.SerializeToString,
    response_deserializer=relay_pb2.IngestAck.FromString)
get_events = channel.unary_stream(
    "/flowsec.v1.Observer/GetEvents",
    request_serializer=relay_pb2.GetEventsRequest.SerializeToString,
    response_deserializer=events_pb2.Event.FromString)
auth = [("authorization", "Bearer " + token)]

# 1. No token, and a wrong token: refused.
for name, metadata in (("no_token", None), ("bad_token", [("authorization", "Bearer nope")])):
    try:
        get_status(relay_pb2.StatusRequest(), metadata=metadata, timeout=5)
        out(name, code="OK")
    except grpc.RpcError as e:
        out(name, code=e.code().name, details=e.details())

# 2. Unary with the token.
status = get_status(relay_pb2.StatusRequest(), metadata=auth, timeout=5)
out("status", storage_ok=status.storage_ok, nodes=[n.node for n in status.nodes])

# 3. Bidirectional streaming: push one batch with one flow, read its ack.
now_ns = time.time_ns()
event = events_pb2.Event(
    time_unix_nano=now_ns, node=node, type=events_pb2.EVENT_TYPE_FLOW, capture="bpf",
    source=events_pb2.Endpoint(ip=bytes([192, 0, 2, 1]), port=40000, pid=4242, process="python-peer"),
    destination=events_pb2.Endpoint(ip=bytes([192, 0, 2, 2]), port=port),
    flow=events_pb2.Flow(protocol=events_pb2.PROTOCOL_TCP, state="closed", duration_ns=1_500_000,
                         direction="egress", verdict=events_pb2.VERDICT_FORWARDED, bytes_sent=10, bytes_received=20))
batch = relay_pb2.EventBatch(node=node, batch_id=77, events=[event])
acks = list(push(iter([batch]), metadata=auth, timeout=10))
out("push", acks=[{"batch_id": a.batch_id, "accepted": a.accepted} for a in acks])

# 4. Server streaming: read it back from storage (bounded wait).
deadline = time.time() + 15
found = None
while time.time() < deadline and found is None:
    # Filtered to this peer's node and port (filters as data): the shared test stack may hold many
    # other flows from the last minute, and streaming them all to python could outlast the deadline.
    request = relay_pb2.GetEventsRequest(
        since_unix_nano=now_ns - 60_000_000_000, event_types=[events_pb2.EVENT_TYPE_FLOW],
        allow=[relay_pb2.EventFilter(node=[node], destination_port=[port])])
    for e in get_events(request, metadata=auth, timeout=10):
        if e.node == node and e.destination.port == port:
            found = e
    if found is None:
        time.sleep(0.2)
out("get_events", found=found is not None,
    process=found.source.process if found else None, pid=found.source.pid if found else None)
