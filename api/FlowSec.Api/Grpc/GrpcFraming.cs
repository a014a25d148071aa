using System.Buffers;
using System.Buffers.Binary;
using Google.Protobuf;

namespace FlowSec.Api.Grpc;

/// <summary>
/// gRPC's length-prefixed message framing: one flag byte (compressed or not), a 4-byte big-endian
/// length, then the protobuf message. Used by both the Kestrel server side and the HttpClient side.
/// </summary>
public static class GrpcFraming
{
    /// <summary>Largest message accepted, so a hostile length prefix cannot make us allocate gigabytes.</summary>
    public const int MaxMessageBytes = 64 * 1024 * 1024;

    /// <summary>Writes one framed message.</summary>
    public static async ValueTask WriteAsync(Stream stream, IMessage message, CancellationToken ct)
    {
        var size = message.CalculateSize();
        var buffer = ArrayPool<byte>.Shared.Rent(size + 5);
        try
        {
            buffer[0] = 0;
            BinaryPrimitives.WriteUInt32BigEndian(buffer.AsSpan(1, 4), (uint)size);
            message.WriteTo(buffer.AsSpan(5, size));
            await stream.WriteAsync(buffer.AsMemory(0, size + 5), ct);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Reads one framed message, or returns null at a clean end of stream.</summary>
    /// <exception cref="GrpcException">The frame is truncated, compressed, too large or not parseable.</exception>
    public static ValueTask<T?> ReadAsync<T>(Stream stream, MessageParser<T> parser, CancellationToken ct)
        where T : class, IMessage<T> =>
        // The array overload parses through CodedInputStream, which every IMessage supports; the
        // span overload needs generated buffer-parsing code that hand-written messages lack.
        ReadFrameAsync(stream, (body, length) => parser.ParseFrom(body, 0, length), ct);

    /// <summary>
    /// Reads one framed message and turns its bytes into a <typeparamref name="T"/> with
    /// <paramref name="parse"/> (for a receiver that decodes the protobuf bytes itself), or returns
    /// null at a clean end of stream. The bytes are only valid during the call.
    /// </summary>
    /// <exception cref="GrpcException">The frame is truncated, compressed, too large or not parseable (<paramref name="parse"/> threw <see cref="InvalidProtocolBufferException"/>).</exception>
    public static ValueTask<T?> ReadAsync<T>(Stream stream, ParseMessage<T> parse, CancellationToken ct)
        where T : class =>
        ReadFrameAsync(stream, (body, length) => parse(body.AsSpan(0, length)), ct);

    private static async ValueTask<T?> ReadFrameAsync<T>(Stream stream, Func<byte[], int, T> parse, CancellationToken ct)
        where T : class
    {
        var header = new byte[5];
        var read = await ReadFullyAsync(stream, header, ct);
        if (read == 0)
        {
            return null;
        }
        if (read < 5)
        {
            throw new GrpcException(GrpcStatusCode.Internal, "truncated gRPC frame header");
        }
        if (header[0] != 0)
        {
            throw new GrpcException(GrpcStatusCode.Unimplemented, "compressed gRPC messages are not supported");
        }
        var length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(1));
        if (length > MaxMessageBytes)
        {
            throw new GrpcException(GrpcStatusCode.ResourceExhausted,
                $"message of {length} bytes exceeds the limit of {MaxMessageBytes}");
        }
        var body = ArrayPool<byte>.Shared.Rent((int)length);
        try
        {
            if (await ReadFullyAsync(stream, body.AsMemory(0, (int)length), ct) < length)
            {
                throw new GrpcException(GrpcStatusCode.Internal, "truncated gRPC message");
            }
            try
            {
                return parse(body, (int)length);
            }
            catch (InvalidProtocolBufferException ex)
            {
                throw new GrpcException(GrpcStatusCode.InvalidArgument, "malformed protobuf message: " + ex.Message, ex);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(body);
        }
    }

    private static async ValueTask<int> ReadFullyAsync(Stream stream, Memory<byte> buffer, CancellationToken ct)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var n = await stream.ReadAsync(buffer[total..], ct);
            if (n == 0)
            {
                break;
            }
            total += n;
        }
        return total;
    }
}

/// <summary>Turns one received protobuf message's bytes into a request; throws <see cref="InvalidProtocolBufferException"/> on malformed input.</summary>
/// <typeparam name="T">The request type.</typeparam>
/// <param name="message">The message's bytes, valid only during the call.</param>
public delegate T ParseMessage<out T>(ReadOnlySpan<byte> message);
