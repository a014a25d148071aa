using FlowSec.Api.V1;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace FlowSec.Sensor.Export;

/// <summary>
/// A message the sensor writes itself instead of through Google.Protobuf's generated code (to size
/// each part once and write the bytes encoded earlier): the <see cref="IMessage"/> plumbing, and the
/// <see cref="EventBatch"/> fields around a batch's events, in the generated code's order.
/// </summary>
internal abstract class WriteOnlyMessage : IMessage, IBufferMessage
{
    /// <inheritdoc />
    public abstract MessageDescriptor Descriptor { get; }

    /// <inheritdoc />
    public abstract int CalculateSize();

    /// <inheritdoc />
    public abstract void InternalWriteTo(ref WriteContext output);

    /// <inheritdoc />
    public void WriteTo(CodedOutputStream output) => output.WriteRawMessage(this);

    /// <summary>The message's bytes (for the spool and tests).</summary>
    public byte[] ToByteArray()
    {
        var bytes = new byte[CalculateSize()];
        MessageExtensions.WriteTo(this, bytes.AsSpan());
        return bytes;
    }

    /// <inheritdoc />
    public void MergeFrom(CodedInputStream input) => throw new NotSupportedException("write-only");

    /// <inheritdoc />
    public void InternalMergeFrom(ref ParseContext ctx) => throw new NotSupportedException("write-only");

    /// <summary>The size of an <see cref="EventBatch"/>'s fields other than its events.</summary>
    protected static int BatchFieldsSize(string node, ulong batchId, SensorStatus? status, bool resent)
    {
        int size = 0;
        if (node.Length != 0)
        {
            size += 1 + CodedOutputStream.ComputeStringSize(node);
        }
        if (batchId != 0UL)
        {
            size += 1 + CodedOutputStream.ComputeUInt64Size(batchId);
        }
        if (status is not null)
        {
            size += 1 + CodedOutputStream.ComputeMessageSize(status);
        }
        if (resent)
        {
            size += 1 + 1;
        }
        return size;
    }

    /// <summary>Writes an <see cref="EventBatch"/>'s fields before its events: node (1), batch_id (2).</summary>
    protected static void WriteBatchHead(ref WriteContext output, string node, ulong batchId)
    {
        if (node.Length != 0)
        {
            output.WriteRawTag(10);
            output.WriteString(node);
        }
        if (batchId != 0UL)
        {
            output.WriteRawTag(16);
            output.WriteUInt64(batchId);
        }
    }

    /// <summary>Writes an <see cref="EventBatch"/>'s fields after its events: status (4), resent (5).</summary>
    protected static void WriteBatchTail(ref WriteContext output, SensorStatus? status, bool resent)
    {
        if (status is not null)
        {
            output.WriteRawTag(34);
            output.WriteMessage(status);
        }
        if (resent)
        {
            output.WriteRawTag(40);
            output.WriteBool(true);
        }
    }
}
