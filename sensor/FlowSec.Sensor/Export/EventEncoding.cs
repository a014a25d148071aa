using FlowSec.Api.V1;
using Google.Protobuf;
using Google.Protobuf.Collections;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Sensor.Export;

/// <summary>
/// Writes one <see cref="Event"/> in exactly the bytes Google.Protobuf's generated code writes, but
/// sizes the event and its endpoints and flow once. The generated code sizes a nested message again
/// every time it writes one: the batch's size, then each event's length prefix, then each
/// endpoint's, so every endpoint was sized three times (about 12 % of the sensor's CPU at 10 k
/// connections/s, docs/benchmarks.md 2026-12-05, third session). <see cref="EventBatchBytes"/>
/// encodes each event with it as the exporter takes it.
/// </summary>
/// <remarks>
/// Fields follow the order and presence rules of the generated <c>InternalWriteTo</c> methods
/// (events.proto); <c>EventEncodingTests</c> checks every field is known and
/// <c>EventBatchBytesTests</c> compares the bytes. Fields unknown to this build are not written:
/// use it for events this sensor built, not for ones read back from a spool written by another
/// version. The event must not change between <see cref="EventSize"/> and <see cref="WriteEvent"/>.
/// </remarks>
internal static class EventEncoding
{
    // As generated for Endpoint.labels (field 10) and Endpoint.names (field 11).
    private static readonly MapField<string, string>.Codec LabelsCodec =
        new(FieldCodec.ForString(10, ""), FieldCodec.ForString(18, ""), 82);
    private static readonly FieldCodec<string> NamesCodec = FieldCodec.ForString(90);

    /// <summary>The size of one event; <paramref name="nested"/> receives its source's, destination's and flow's.</summary>
    internal static int EventSize(Event e, Span<int> nested)
    {
        int size = 0;
        if (e.TimeUnixNano != 0UL)
        {
            size += 1 + 8;
        }
        if (e.Node.Length != 0)
        {
            size += 1 + CodedOutputStream.ComputeStringSize(e.Node);
        }
        if (e.Type != EventType.Unspecified)
        {
            size += 1 + CodedOutputStream.ComputeEnumSize((int)e.Type);
        }
        if (e.Capture.Length != 0)
        {
            size += 1 + CodedOutputStream.ComputeStringSize(e.Capture);
        }
        if (e.Source is { } source)
        {
            nested[0] = EndpointSize(source);
            size += 1 + CodedOutputStream.ComputeLengthSize(nested[0]) + nested[0];
        }
        if (e.Destination is { } destination)
        {
            nested[1] = EndpointSize(destination);
            size += 1 + CodedOutputStream.ComputeLengthSize(nested[1]) + nested[1];
        }
        if (e.Flow is { } flow)
        {
            nested[2] = FlowSize(flow);
            size += 1 + CodedOutputStream.ComputeLengthSize(nested[2]) + nested[2];
        }
        // The other kinds are a few per second: their generated code sizes them.
        if (e.Dns is { } dns)
        {
            size += 1 + CodedOutputStream.ComputeMessageSize(dns);
        }
        if (e.Process is { } process)
        {
            size += 1 + CodedOutputStream.ComputeMessageSize(process);
        }
        if (e.File is { } file)
        {
            size += 1 + CodedOutputStream.ComputeMessageSize(file);
        }
        if (e.Alert is { } alert)
        {
            size += 1 + CodedOutputStream.ComputeMessageSize(alert);
        }
        return size;
    }

    internal static void WriteEvent(ref WriteContext output, Event e, int sourceSize, int destinationSize, int flowSize)
    {
        if (e.TimeUnixNano != 0UL)
        {
            output.WriteRawTag(9);
            output.WriteFixed64(e.TimeUnixNano);
        }
        if (e.Node.Length != 0)
        {
            output.WriteRawTag(18);
            output.WriteString(e.Node);
        }
        if (e.Type != EventType.Unspecified)
        {
            output.WriteRawTag(24);
            output.WriteEnum((int)e.Type);
        }
        if (e.Capture.Length != 0)
        {
            output.WriteRawTag(34);
            output.WriteString(e.Capture);
        }
        if (e.Source is { } source)
        {
            output.WriteRawTag(42);
            output.WriteLength(sourceSize);
            WriteEndpoint(ref output, source);
        }
        if (e.Destination is { } destination)
        {
            output.WriteRawTag(50);
            output.WriteLength(destinationSize);
            WriteEndpoint(ref output, destination);
        }
        if (e.Flow is { } flow)
        {
            output.WriteRawTag(58);
            output.WriteLength(flowSize);
            WriteFlow(ref output, flow);
        }
        if (e.Dns is { } dns)
        {
            output.WriteRawTag(66);
            output.WriteMessage(dns);
        }
        if (e.Process is { } process)
        {
            output.WriteRawTag(74);
            output.WriteMessage(process);
        }
        if (e.File is { } file)
        {
            output.WriteRawTag(82);
            output.WriteMessage(file);
        }
        if (e.Alert is { } alert)
        {
            output.WriteRawTag(90);
            output.WriteMessage(alert);
        }
    }

    private static int EndpointSize(Endpoint ep)
    {
        int size = 0;
        if (ep.Ip.Length != 0)
        {
            size += 1 + CodedOutputStream.ComputeBytesSize(ep.Ip);
        }
        if (ep.Port != 0)
        {
            size += 1 + CodedOutputStream.ComputeUInt32Size(ep.Port);
        }
        if (ep.Pid != 0)
        {
            size += 1 + CodedOutputStream.ComputeUInt32Size(ep.Pid);
        }
        if (ep.Process.Length != 0)
        {
            size += 1 + CodedOutputStream.ComputeStringSize(ep.Process);
        }
        if (ep.CgroupId != 0UL)
        {
            size += 1 + CodedOutputStream.ComputeUInt64Size(ep.CgroupId);
        }
        if (ep.ContainerId.Length != 0)
        {
            size += 1 + CodedOutputStream.ComputeStringSize(ep.ContainerId);
        }
        if (ep.Workload.Length != 0)
        {
            size += 1 + CodedOutputStream.ComputeStringSize(ep.Workload);
        }
        if (ep.Pod.Length != 0)
        {
            size += 1 + CodedOutputStream.ComputeStringSize(ep.Pod);
        }
        if (ep.Namespace.Length != 0)
        {
            size += 1 + CodedOutputStream.ComputeStringSize(ep.Namespace);
        }
        if (ep.Labels.Count != 0)
        {
            size += ep.Labels.CalculateSize(LabelsCodec);
        }
        if (ep.Names.Count != 0)
        {
            size += ep.Names.CalculateSize(NamesCodec);
        }
        return size;
    }

    private static void WriteEndpoint(ref WriteContext output, Endpoint ep)
    {
        if (ep.Ip.Length != 0)
        {
            output.WriteRawTag(10);
            output.WriteBytes(ep.Ip);
        }
        if (ep.Port != 0)
        {
            output.WriteRawTag(16);
            output.WriteUInt32(ep.Port);
        }
        if (ep.Pid != 0)
        {
            output.WriteRawTag(24);
            output.WriteUInt32(ep.Pid);
        }
        if (ep.Process.Length != 0)
        {
            output.WriteRawTag(34);
            output.WriteString(ep.Process);
        }
        if (ep.CgroupId != 0UL)
        {
            output.WriteRawTag(40);
            output.WriteUInt64(ep.CgroupId);
        }
        if (ep.ContainerId.Length != 0)
        {
            output.WriteRawTag(50);
            output.WriteString(ep.ContainerId);
        }
        if (ep.Workload.Length != 0)
        {
            output.WriteRawTag(58);
            output.WriteString(ep.Workload);
        }
        if (ep.Pod.Length != 0)
        {
            output.WriteRawTag(66);
            output.WriteString(ep.Pod);
        }
        if (ep.Namespace.Length != 0)
        {
            output.WriteRawTag(74);
            output.WriteString(ep.Namespace);
        }
        if (ep.Labels.Count != 0)
        {
            ep.Labels.WriteTo(ref output, LabelsCodec);
        }
        if (ep.Names.Count != 0)
        {
            ep.Names.WriteTo(ref output, NamesCodec);
        }
    }

    private static int FlowSize(Flow f)
    {
        int size = 0;
        if (f.Protocol != Protocol.Unspecified)
        {
            size += 1 + CodedOutputStream.ComputeEnumSize((int)f.Protocol);
        }
        if (f.State.Length != 0)
        {
            size += 1 + CodedOutputStream.ComputeStringSize(f.State);
        }
        if (f.DurationNs != 0UL)
        {
            size += 1 + CodedOutputStream.ComputeUInt64Size(f.DurationNs);
        }
        if (f.Direction.Length != 0)
        {
            size += 1 + CodedOutputStream.ComputeStringSize(f.Direction);
        }
        if (f.Verdict != Verdict.Unspecified)
        {
            size += 1 + CodedOutputStream.ComputeEnumSize((int)f.Verdict);
        }
        if (f.DropReason.Length != 0)
        {
            size += 1 + CodedOutputStream.ComputeStringSize(f.DropReason);
        }
        if (f.BytesSent != 0UL)
        {
            size += 1 + CodedOutputStream.ComputeUInt64Size(f.BytesSent);
        }
        if (f.BytesReceived != 0UL)
        {
            size += 1 + CodedOutputStream.ComputeUInt64Size(f.BytesReceived);
        }
        if (f.PacketsSent != 0UL)
        {
            size += 1 + CodedOutputStream.ComputeUInt64Size(f.PacketsSent);
        }
        if (f.PacketsReceived != 0UL)
        {
            size += 1 + CodedOutputStream.ComputeUInt64Size(f.PacketsReceived);
        }
        if (f.RttUs != 0)
        {
            size += 1 + CodedOutputStream.ComputeUInt32Size(f.RttUs);
        }
        if (f.Retransmits != 0)
        {
            size += 1 + CodedOutputStream.ComputeUInt32Size(f.Retransmits);
        }
        if (f.SocketId != 0UL)
        {
            size += 1 + CodedOutputStream.ComputeUInt64Size(f.SocketId);
        }
        return size;
    }

    private static void WriteFlow(ref WriteContext output, Flow f)
    {
        if (f.Protocol != Protocol.Unspecified)
        {
            output.WriteRawTag(8);
            output.WriteEnum((int)f.Protocol);
        }
        if (f.State.Length != 0)
        {
            output.WriteRawTag(18);
            output.WriteString(f.State);
        }
        if (f.DurationNs != 0UL)
        {
            output.WriteRawTag(24);
            output.WriteUInt64(f.DurationNs);
        }
        if (f.Direction.Length != 0)
        {
            output.WriteRawTag(34);
            output.WriteString(f.Direction);
        }
        if (f.Verdict != Verdict.Unspecified)
        {
            output.WriteRawTag(40);
            output.WriteEnum((int)f.Verdict);
        }
        if (f.DropReason.Length != 0)
        {
            output.WriteRawTag(50);
            output.WriteString(f.DropReason);
        }
        if (f.BytesSent != 0UL)
        {
            output.WriteRawTag(56);
            output.WriteUInt64(f.BytesSent);
        }
        if (f.BytesReceived != 0UL)
        {
            output.WriteRawTag(64);
            output.WriteUInt64(f.BytesReceived);
        }
        if (f.PacketsSent != 0UL)
        {
            output.WriteRawTag(72);
            output.WriteUInt64(f.PacketsSent);
        }
        if (f.PacketsReceived != 0UL)
        {
            output.WriteRawTag(80);
            output.WriteUInt64(f.PacketsReceived);
        }
        if (f.RttUs != 0)
        {
            output.WriteRawTag(88);
            output.WriteUInt32(f.RttUs);
        }
        if (f.Retransmits != 0)
        {
            output.WriteRawTag(96);
            output.WriteUInt32(f.Retransmits);
        }
        if (f.SocketId != 0UL)
        {
            output.WriteRawTag(104);
            output.WriteUInt64(f.SocketId);
        }
    }
}
