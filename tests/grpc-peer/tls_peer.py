#!/usr/bin/python3
"""Debian's python3-grpcio calling a relay that requires mutual TLS.

Usage: tls_peer.py ADDRESS TOKEN GENERATED_DIR CA CERT KEY
Prints one JSON line per step: with the client certificate (must work), without it (must fail).
"""
import json
import sys

address, token, generated, ca, cert, key = sys.argv[1:7]
sys.path.insert(0, generated)

import grpc  # noqa: E402
from flowsec.v1 import relay_pb2  # noqa: E402


def read(path):
    with open(path, "rb") as f:
        return f.read()


def status(credentials):
    channel = grpc.secure_channel(address, credentials)
    call = channel.unary_unary(
        "/flowsec.v1.Observer/GetStatus",
        request_serializer=relay_pb2.StatusRequest.SerializeToString,
        response_deserializer=relay_pb2.StatusResponse.FromString)
    try:
        reply = call(relay_pb2.StatusRequest(), metadata=[("authorization", "Bearer " + token)], timeout=10)
        return {"code": "OK", "storage_ok": reply.storage_ok}
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details()}
    finally:
        channel.close()


print(json.dumps({"step": "with_cert", **status(grpc.ssl_channel_credentials(read(ca), read(key), read(cert)))}), flush=True)
print(json.dumps({"step": "without_cert", **status(grpc.ssl_channel_credentials(read(ca)))}), flush=True)
