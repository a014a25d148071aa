using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using FlowSec.Api.Auth;
using FlowSec.Api.Grpc;
using FlowSec.Api.V1;
using FlowSec.Tests.Storage;
using Google.Protobuf;

namespace FlowSec.Tests.Integration;

/// <summary>
/// A sensor stream that sends a malformed batch after a good one, against a real relay and
/// ClickHouse: the good batch is acked and stored, the malformed one ends the stream with
/// InvalidArgument and a message saying why, and none of its events (not even the well-formed
/// flows before the damage) is counted or stored.
/// </summary>
public sealed class MalformedBatchTests(IngestRelay relay) : IClassFixture<IngestRelay>
{
    [Fact]
    public async Task A_malformed_batch_is_refused_at_ingest_and_nothing_of_it_is_stored()
    {
        const string node = "malformed-node";
        var good = Batch(node, 1, TestFlows.Flows(20));
        var bad = Batch(node, 2, TestFlows.Flows(10));
        // The batch's last field is its tenth flow: cut in half, it claims more bytes than the
        // message has, after nine well-formed flows.
        var cut = bad.ToByteArray()[..^(bad.Events[^1].CalculateSize() / 2)];
        var storedBefore = (await relay.StatusAsync()).EventsStored;
        using var http = new HttpClient();
        var fullParsedBefore = FullParsed(await http.GetStringAsync(new Uri(relay.UiAddress, "/metrics")));
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(relay.RelayAddress, "/" + RelayMethods.Push))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent([.. Frame(good.ToByteArray()), .. Frame(cut)]),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", TokenFile.Read(relay.TokenFilePath));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var response = await http.SendAsync(request, timeout.Token);
        var body = await response.Content.ReadAsByteArrayAsync(timeout.Token);

        var acks = Acks(body);
        acks.Select(a => (a.BatchId, a.Accepted)).Should().Equal([(1UL, 20U)], "the good batch is acked once stored; the malformed one never");
        response.TrailingHeaders.GetValues("grpc-status").Single().Should().Be(((int)GrpcStatusCode.InvalidArgument).ToString(System.Globalization.CultureInfo.InvariantCulture));
        Uri.UnescapeDataString(response.TrailingHeaders.GetValues("grpc-message").Single()).Should().StartWith("malformed protobuf message: ");

        var status = await relay.StatusAsync();
        status.Nodes.Single(n => n.Node == node).EventsReceived.Should().Be(20, "the malformed batch's events were never taken in");
        status.EventsStored.Should().Be(storedBefore + 20);
        var query = new GetEventsRequest { SinceUnixNano = TestFlows.BaseNs - 1, Allow = { new EventFilter { Node = { node } } } };
        var stored = await relay.Client.ServerStreamingAsync(RelayMethods.GetEvents, query, Event.Parser, timeout.Token).ToListAsync(timeout.Token);
        stored.Select(e => e.TimeUnixNano).Should().BeEquivalentTo(good.Events.Select(e => e.TimeUnixNano), "only the good batch's flows are stored");
        FullParsed(await http.GetStringAsync(new Uri(relay.UiAddress, "/metrics"))).Should().Be(fullParsedBefore + 1,
            "the column decoder refused the cut batch and handed it to the full parser, which refused it too: visible in /metrics");
    }

    private static long FullParsed(string metrics) =>
        long.Parse(metrics.Split('\n').Single(l => l.StartsWith("flowsec_relay_batches_full_parsed_total ", StringComparison.Ordinal)).Split(' ')[1],
            System.Globalization.CultureInfo.InvariantCulture);

    private static EventBatch Batch(string node, ulong id, IEnumerable<Event> events)
    {
        var batch = new EventBatch { Node = node, BatchId = id };
        batch.Events.AddRange(events);
        return batch;
    }

    private static byte[] Frame(byte[] message)
    {
        var frame = new byte[5 + message.Length];
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)message.Length);
        message.CopyTo(frame, 5);
        return frame;
    }

    private static List<IngestAck> Acks(byte[] body)
    {
        var acks = new List<IngestAck>();
        for (var at = 0; at + 5 <= body.Length;)
        {
            var length = (int)BinaryPrimitives.ReadUInt32BigEndian(body.AsSpan(at + 1));
            acks.Add(IngestAck.Parser.ParseFrom(body.AsSpan(at + 5, length)));
            at += 5 + length;
        }

        return acks;
    }
}
