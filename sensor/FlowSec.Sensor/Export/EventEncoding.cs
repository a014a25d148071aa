using FlowSec.Api.V1;
using Google.Protobuf;
using Endpoint = FlowSec.Api.V1.Endpoint;

namespace FlowSec.Sensor.Export;

/// <summary>
/// Writes one <see cref="Event"/>, as it appears inside an <see cref="EventBatch"/> (tag, length,
/// event), in exactly the bytes Google.Protobuf's generated code writes, straight into a span
/// (<see cref="ProtoSpanWriter"/>): each part is sized once, and an endpoint's identity fields are
/// copied from <see cref="EndpointIdentityBytes"/> instead of transcoded again. One encoder per
/// thread (<see cref="ForThisThread"/>): <see cref="EventBatchBytes"/> uses it on the capture
/// threads and the exporter.
/// </summary>
/// <remarks>
/// Why: with <c>WriteContext</c> every string of every event was transcoded from UTF-16 to UTF-8
/// (sized, then written), and an endpoint's process, workload, pod and labels repeat across
/// thousands of flows; encoding was 1.4–1.8 µs of the sensor's ~5 µs of user-space CPU per
/// <c>Connection: close</c> request (docs/benchmarks.md, issue 3, sixth and eighth sessions).
/// Fields follow the order and presence rules of the generated <c>InternalWriteTo</c> methods
/// (events.proto); <c>EventEncodingTests</c> checks every field is known and compares the bytes.
/// Fields unknown to this build are not written: use it for events this sensor built, not for ones
/// read back from a spool written by another version. The event must not change between
/// <see cref="Prepare"/> and <see cref="Write"/>.
/// </remarks>
internal sealed class EventEncoding
{
    // Each event as it appears inside the batch: tag 26 (field 3, length-delimited), length, event.
    private const byte EventTag = 26;

    [ThreadStatic]
    private static EventEncoding? t_encoder;

    private Event? _event;
    private int _size;
    private int _source;
    private int _destination;
    private int _flow;

    /// <summary>This thread's encoder.</summary>
    internal static EventEncoding ForThisThread => t_encoder ??= new EventEncoding();

    /// <summary>The endpoint identities this encoder has encoded.</summary>
    internal EndpointIdentityBytes Identities { get; } = new();

    /// <summary>Sizes <paramref name="e"/> for the <see cref="Write"/> that follows; returns its size in a batch (tag, length, event).</summary>
    internal int Prepare(Event e)
    {
        _event = e;
        (_source, _destination, _flow) = (0, 0, 0);
        _size = EventSize(e);
        return 1 + ProtoSpanWriter.VarintSize((uint)_size) + _size;
    }

    /// <summary>Writes the prepared event into <paramref name="buffer"/>, exactly <see cref="Prepare"/>'s size, and forgets it.</summary>
    internal void Write(Span<byte> buffer)
    {
        var e = _event!;
        _event = null;
        var output = new ProtoSpanWriter(buffer);
        output.Tag(EventTag);
        output.Varint((uint)_size);
        if (e.TimeUnixNano != 0UL)
        {
            output.Tag(9);
            output.Fixed64(e.TimeUnixNano);
        }
        output.StringField(18, e.Node);
        output.EnumField(24, (int)e.Type);
        output.StringField(34, e.Capture);
        if (e.Source is { } source)
        {
            output.Tag(42);
            output.Varint((uint)_source);
            WriteEndpoint(ref output, source);
        }
        if (e.Destination is { } destination)
        {
            output.Tag(50);
            output.Varint((uint)_destination);
            WriteEndpoint(ref output, destination);
        }
        if (e.Flow is { } flow)
        {
            output.Tag(58);
            output.Varint((uint)_flow);
            WriteFlow(ref output, flow);
        }
        // The other kinds are a few per second: their generated code writes them.
        if (e.Dns is { } dns)
        {
            output.Tag(66);
            WriteMessage(ref output, buffer, dns);
        }
        if (e.Process is { } process)
        {
            output.Tag(74);
            WriteMessage(ref output, buffer, process);
        }
        if (e.File is { } file)
        {
            output.Tag(82);
            WriteMessage(ref output, buffer, file);
        }
        if (e.Alert is { } alert)
        {
            output.Tag(90);
            WriteMessage(ref output, buffer, alert);
        }
        if (output.Position != buffer.Length)
        {
            throw new InvalidOperationException($"Event encoded in {output.Position} bytes, sized {buffer.Length}: it changed between Prepare and Write.");
        }
    }

    private int EventSize(Event e)
    {
        int size = (e.TimeUnixNano != 0UL ? 1 + 8 : 0) + ProtoSpanWriter.StringFieldSize(e.Node)
            + ProtoSpanWriter.EnumFieldSize((int)e.Type) + ProtoSpanWriter.StringFieldSize(e.Capture);
        if (e.Source is { } source)
        {
            _source = EndpointSize(source);
            size += 1 + ProtoSpanWriter.VarintSize((uint)_source) + _source;
        }
        if (e.Destination is { } destination)
        {
            _destination = EndpointSize(destination);
            size += 1 + ProtoSpanWriter.VarintSize((uint)_destination) + _destination;
        }
        if (e.Flow is { } flow)
        {
            _flow = FlowSize(flow);
            size += 1 + ProtoSpanWriter.VarintSize((uint)_flow) + _flow;
        }
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

    private static void WriteMessage(ref ProtoSpanWriter output, Span<byte> buffer, IMessage message)
    {
        int size = message.CalculateSize();
        output.Varint((uint)size);
        message.WriteTo(buffer.Slice(output.Position, size));
        output.Skip(size);
    }

    private int EndpointSize(Endpoint ep)
    {
        int size = 0;
        if (ep.Ip.Length != 0)
        {
            size += 1 + ProtoSpanWriter.VarintSize((uint)ep.Ip.Length) + ep.Ip.Length;
        }
        size += ProtoSpanWriter.VarintFieldSize(ep.Port);
        if (!EndpointIdentityBytes.IsEmpty(ep))
        {
            size += Identities.For(ep).Length;
        }
        for (int i = 0; i < ep.Names.Count; i++)
        {
            size += 1 + ProtoSpanWriter.StringSize(ep.Names[i]);
        }
        return size;
    }

    private void WriteEndpoint(ref ProtoSpanWriter output, Endpoint ep)
    {
        if (ep.Ip.Length != 0)
        {
            output.Tag(10);
            output.Varint((uint)ep.Ip.Length);
            output.Raw(ep.Ip.Span);
        }
        output.VarintField(16, ep.Port);
        if (!EndpointIdentityBytes.IsEmpty(ep))
        {
            // Looked up again rather than kept from sizing: the other endpoint may have taken the slot since.
            output.Raw(Identities.For(ep));
        }
        for (int i = 0; i < ep.Names.Count; i++)
        {
            output.Tag(90);
            output.String(ep.Names[i]);
        }
    }

    private static int FlowSize(Flow f) =>
        ProtoSpanWriter.EnumFieldSize((int)f.Protocol) + ProtoSpanWriter.StringFieldSize(f.State)
        + ProtoSpanWriter.VarintFieldSize(f.DurationNs) + ProtoSpanWriter.StringFieldSize(f.Direction)
        + ProtoSpanWriter.EnumFieldSize((int)f.Verdict) + ProtoSpanWriter.StringFieldSize(f.DropReason)
        + ProtoSpanWriter.VarintFieldSize(f.BytesSent) + ProtoSpanWriter.VarintFieldSize(f.BytesReceived)
        + ProtoSpanWriter.VarintFieldSize(f.PacketsSent) + ProtoSpanWriter.VarintFieldSize(f.PacketsReceived)
        + ProtoSpanWriter.VarintFieldSize(f.RttUs) + ProtoSpanWriter.VarintFieldSize(f.Retransmits)
        + ProtoSpanWriter.VarintFieldSize(f.SocketId);

    private static void WriteFlow(ref ProtoSpanWriter output, Flow f)
    {
        output.EnumField(8, (int)f.Protocol);
        output.StringField(18, f.State);
        output.VarintField(24, f.DurationNs);
        output.StringField(34, f.Direction);
        output.EnumField(40, (int)f.Verdict);
        output.StringField(50, f.DropReason);
        output.VarintField(56, f.BytesSent);
        output.VarintField(64, f.BytesReceived);
        output.VarintField(72, f.PacketsSent);
        output.VarintField(80, f.PacketsReceived);
        output.VarintField(88, f.RttUs);
        output.VarintField(96, f.Retransmits);
        output.VarintField(104, f.SocketId);
    }
}
