using FlowSec.Api.V1;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace FlowSec.Benchmarks;

/// <summary>
/// What the overhead benchmark's relay sink needs from an <see cref="EventBatch"/>, read by a field
/// scan instead of a full parse: the batch id, how many events it holds, how many of them are
/// client-side flows to the benchmark's server (type FLOW, direction "egress", destination port
/// <see cref="ServerPort"/>: the same test the full parse made), and the sensor's status. The sink
/// shares the machine with the sensor it measures; a full parse builds every endpoint's label map
/// and strings, which cost as much CPU as the sensor itself (docs/benchmarks.md, 2026-12-05).
/// Receive-only: writing or merging one is not supported.
/// </summary>
internal sealed class CountedBatch : IMessage<CountedBatch>
{
    /// <summary>The server port whose client-side flows are counted.</summary>
    public const uint ServerPort = 8080;

    /// <summary>Parses batches by scanning them.</summary>
    public static MessageParser<CountedBatch> Parser { get; } = new(() => new CountedBatch());

    /// <summary>The batch's id (field 2).</summary>
    public ulong BatchId { get; private set; }

    /// <summary>Events in the batch (field 3).</summary>
    public int Events { get; private set; }

    /// <summary>Flows with type FLOW, direction "egress" and destination port <see cref="ServerPort"/>.</summary>
    public int ClientFlows { get; private set; }

    /// <summary>The sensor's status (field 4), when the batch carries one.</summary>
    public SensorStatus? Status { get; private set; }

    /// <inheritdoc />
    public MessageDescriptor Descriptor => EventBatch.Descriptor;

    /// <inheritdoc />
    public void MergeFrom(CodedInputStream input)
    {
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            switch (tag)
            {
                case (2 << 3) | 0:
                    BatchId = input.ReadUInt64();
                    break;
                case (3 << 3) | 2:
                    Events++;
                    if (IsClientFlow(input.ReadBytes().Span))
                    {
                        ClientFlows++;
                    }
                    break;
                case (4 << 3) | 2:
                    Status ??= new SensorStatus();
                    input.ReadMessage(Status);
                    break;
                default:
                    input.SkipLastField();
                    break;
            }
        }
    }

    // One Event's bytes: type (3), destination (6) port (2), flow (7) direction (4); the last
    // occurrence of a field wins, as in a full parse.
    private static bool IsClientFlow(ReadOnlySpan<byte> e)
    {
        ulong type = 0, port = 0;
        bool egress = false;
        int pos = 0;
        while (pos < e.Length)
        {
            ulong tag = Varint(e, ref pos);
            if (tag == ((3 << 3) | 0))
            {
                type = Varint(e, ref pos);
            }
            else if (tag == ((6 << 3) | 2))
            {
                var destination = LengthDelimited(e, ref pos);
                ScanField(destination, (2 << 3) | 0, (value, _) => port = value);
            }
            else if (tag == ((7 << 3) | 2))
            {
                var flow = LengthDelimited(e, ref pos);
                ScanField(flow, (4 << 3) | 2, (_, bytes) => egress = bytes.SequenceEqual("egress"u8));
            }
            else
            {
                Skip(e, ref pos, (int)(tag & 7));
            }
        }
        return type == (ulong)EventType.Flow && egress && port == ServerPort;
    }

    private delegate void FieldValue(ulong varint, ReadOnlySpan<byte> bytes);

    // Calls found for every occurrence of one field (varint or length-delimited) of a message.
    private static void ScanField(ReadOnlySpan<byte> message, ulong wantedTag, FieldValue found)
    {
        int pos = 0;
        while (pos < message.Length)
        {
            ulong tag = Varint(message, ref pos);
            if (tag == wantedTag)
            {
                if ((tag & 7) == 2)
                {
                    found(0, LengthDelimited(message, ref pos));
                }
                else
                {
                    found(Varint(message, ref pos), default);
                }
            }
            else
            {
                Skip(message, ref pos, (int)(tag & 7));
            }
        }
    }

    private static ulong Varint(ReadOnlySpan<byte> data, ref int pos)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            byte b = data[pos++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }
        throw new InvalidDataException("malformed varint");
    }

    private static ReadOnlySpan<byte> LengthDelimited(ReadOnlySpan<byte> data, ref int pos)
    {
        int length = checked((int)Varint(data, ref pos));
        var value = data.Slice(pos, length);
        pos += length;
        return value;
    }

    private static void Skip(ReadOnlySpan<byte> data, ref int pos, int wireType)
    {
        switch (wireType)
        {
            case 0:
                Varint(data, ref pos);
                break;
            case 1:
                pos += 8;
                break;
            case 2:
                LengthDelimited(data, ref pos);
                break;
            case 5:
                pos += 4;
                break;
            default:
                throw new InvalidDataException($"unexpected wire type {wireType}");
        }
    }

    /// <inheritdoc />
    public void MergeFrom(CountedBatch message) => throw new NotSupportedException("receive-only");

    /// <inheritdoc />
    public void WriteTo(CodedOutputStream output) => throw new NotSupportedException("receive-only");

    /// <inheritdoc />
    public int CalculateSize() => throw new NotSupportedException("receive-only");

    /// <inheritdoc />
    public CountedBatch Clone() => throw new NotSupportedException("receive-only");

    /// <inheritdoc />
    public bool Equals(CountedBatch? other) => ReferenceEquals(this, other);

    /// <inheritdoc />
    public override bool Equals(object? obj) => ReferenceEquals(this, obj);

    /// <inheritdoc />
    public override int GetHashCode() => BatchId.GetHashCode();
}
