using System.IO.Compression;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;

namespace FlowSec.Relay.Storage;

/// <summary>
/// The small ClickHouse HTTP client FlowSec needs (ClickHouse.Client is not available here, and
/// needs RowBinaryWithNamesAndTypes, which 18.16 lacks): SQL in the POST body, Native or RowBinary
/// inserts (gzip-compressed unless the server is on loopback, see <see cref="ClickHouseOptions.CompressInserts"/>),
/// reads as JSONEachRow.
/// </summary>
public sealed class ClickHouseHttpClient : IDisposable
{
    // The server's default max_query_size; longer statements (e.g. huge literals) raise it per query.
    private const int DefaultMaxQuerySize = 256 * 1024;

    private readonly HttpClient _http;
    private readonly Uri _baseUri;
    private readonly bool _compress;

    /// <summary>Creates a client for the server and credentials in <paramref name="options"/>.</summary>
    public ClickHouseHttpClient(ClickHouseOptions options)
    {
        _baseUri = new Uri(options.Url.TrimEnd('/') + "/");
        _compress = options.CompressInserts ?? !_baseUri.IsLoopback;
        _http = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
        {
            Timeout = options.RequestTimeout,
        };
        var credentials = Convert.ToBase64String(Encoding.UTF8.GetBytes($"{options.User}:{options.Password}"));
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", credentials);
    }

    /// <summary>The server's base URL.</summary>
    public Uri BaseUri => _baseUri;

    /// <summary>Whether insert bodies go gzip-compressed (see <see cref="ClickHouseOptions.CompressInserts"/>).</summary>
    public bool CompressesInserts => _compress;

    /// <summary>True when <c>GET /ping</c> answers <c>Ok.</c>; false when ClickHouse cannot be reached or answers otherwise.</summary>
    public async Task<bool> PingAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(_baseUri, "ping"));
            using var response = await SendRequestAsync(request, HttpCompletionOption.ResponseContentRead, cancellationToken);
            return (await response.Content.ReadAsStringAsync(cancellationToken)).Trim() == "Ok.";
        }
        catch (ClickHouseException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    /// <summary>Runs a statement that returns nothing (DDL, INSERT … SELECT).</summary>
    /// <param name="sql">The statement; values in it must come from <see cref="SqlLiteral"/>.</param>
    /// <param name="settings">ClickHouse settings for this statement only (sent as URL parameters).</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    public async Task ExecuteAsync(string sql, IReadOnlyDictionary<string, string>? settings = null, CancellationToken cancellationToken = default)
    {
        using var response = await SendAsync(sql, settings, HttpCompletionOption.ResponseContentRead, cancellationToken);
    }

    /// <summary>Runs a query and returns the response body as text (e.g. TabSeparated scalars).</summary>
    public async Task<string> QueryTextAsync(string sql, CancellationToken cancellationToken = default)
    {
        using var response = await SendAsync(sql, null, HttpCompletionOption.ResponseContentRead, cancellationToken);
        return await response.Content.ReadAsStringAsync(cancellationToken);
    }

    /// <summary>
    /// Runs a SELECT with <c>FORMAT JSONEachRow</c> appended and streams one JSON object per row.
    /// 64-bit integers arrive as JSON strings; FixedString bytes should be selected through <c>hex()</c>.
    /// </summary>
    public async IAsyncEnumerable<JsonElement> QueryJsonEachRowAsync(string sql, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var response = await SendAsync(sql + "\nFORMAT JSONEachRow", null, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken), Encoding.UTF8);
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (line.Length == 0)
            {
                continue;
            }

            // An error after the first rows were sent arrives in the body of a 200 response.
            if (line[0] != '{')
            {
                var rest = line + "\n" + await reader.ReadToEndAsync(cancellationToken);
                throw ClickHouseException.FromResponse(response.StatusCode, rest);
            }

            using var row = JsonDocument.Parse(line);
            yield return row.RootElement.Clone();
        }
    }

    /// <summary>
    /// Inserts a RowBinary body (rows already encoded by <see cref="RowBinaryWriter"/>) into
    /// <paramref name="table"/>.
    /// </summary>
    /// <param name="table">Qualified table name, e.g. <c>flowsec.flows</c>.</param>
    /// <param name="columns">Columns in the order each row was written.</param>
    /// <param name="body">The rows.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <param name="queryId">ClickHouse's <c>query_id</c> for the insert (shown in <c>system.processes</c> while it runs), or null for a server-chosen one.</param>
    public Task InsertRowBinaryAsync(string table, IReadOnlyList<string> columns, ReadOnlyMemory<byte> body, CancellationToken cancellationToken = default, string? queryId = null) =>
        InsertAsync(table, columns, "RowBinary", body.Length, (stream, ct) => stream.WriteAsync(body, ct).AsTask(), cancellationToken, queryId);

    /// <summary>
    /// Inserts a body in <paramref name="format"/> into <paramref name="table"/>. The body is
    /// written by <paramref name="writeBody"/> straight into the request (or into gzip first, when
    /// inserts are compressed), so it is never copied whole; a retry calls it again.
    /// </summary>
    /// <param name="table">Qualified table name, e.g. <c>flowsec.flows</c>.</param>
    /// <param name="columns">The columns the body holds, in its order.</param>
    /// <param name="format">A ClickHouse input format name, e.g. <c>Native</c>.</param>
    /// <param name="length">The exact number of bytes <paramref name="writeBody"/> writes.</param>
    /// <param name="writeBody">Writes the body to a stream.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <param name="queryId">ClickHouse's <c>query_id</c> for the insert, or null for a server-chosen one.</param>
    public async Task InsertAsync(string table, IReadOnlyList<string> columns, string format, long length, Func<Stream, CancellationToken, Task> writeBody,
        CancellationToken cancellationToken = default, string? queryId = null)
    {
        var sql = $"INSERT INTO {SqlLiteral.Identifier(table)} ({string.Join(", ", columns.Select(c => "`" + SqlLiteral.Identifier(c) + "`"))}) FORMAT {SqlLiteral.Identifier(format)}";

        HttpContent content;
        if (_compress)
        {
            var compressed = new MemoryStream((int)Math.Min(int.MaxValue, length / 4 + 64));
            await using (var gzip = new GZipStream(compressed, CompressionLevel.Fastest, leaveOpen: true))
            {
                await writeBody(gzip, cancellationToken);
            }

            content = new ByteArrayContent(compressed.GetBuffer(), 0, (int)compressed.Length);
            content.Headers.ContentEncoding.Add("gzip");
        }
        else
        {
            content = new BodyContent(writeBody, length);
        }

        using var _ = content;
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        var parameters = new Dictionary<string, string> { ["query"] = sql };
        if (queryId is not null)
        {
            parameters["query_id"] = queryId;
        }

        using var request = new HttpRequestMessage(HttpMethod.Post, BuildUri(parameters)) { Content = content };
        using var response = await SendRequestAsync(request, HttpCompletionOption.ResponseContentRead, cancellationToken);
    }

    /// <summary>A body of known length written on demand, so a large insert is not copied into a second buffer.</summary>
    private sealed class BodyContent(Func<Stream, CancellationToken, Task> write, long length) : HttpContent
    {
        protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) =>
            write(stream, CancellationToken.None);

        protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context, CancellationToken cancellationToken) =>
            write(stream, cancellationToken);

        protected override bool TryComputeLength(out long result)
        {
            result = length;
            return true;
        }
    }

    /// <inheritdoc />
    public void Dispose() => _http.Dispose();

    private async Task<HttpResponseMessage> SendAsync(string sql, IReadOnlyDictionary<string, string>? settings, HttpCompletionOption completion, CancellationToken cancellationToken)
    {
        var parameters = settings is null ? new Dictionary<string, string>() : new Dictionary<string, string>(settings);
        var size = Encoding.UTF8.GetByteCount(sql);
        if (size >= DefaultMaxQuerySize && !parameters.ContainsKey("max_query_size"))
        {
            parameters["max_query_size"] = (size + 1024).ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        using var request = new HttpRequestMessage(HttpMethod.Post, BuildUri(parameters))
        {
            Content = new StringContent(sql, new UTF8Encoding(false), "text/plain"),
        };
        return await SendRequestAsync(request, completion, cancellationToken);
    }

    private async Task<HttpResponseMessage> SendRequestAsync(HttpRequestMessage request, HttpCompletionOption completion, CancellationToken cancellationToken)
    {
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, completion, cancellationToken);
        }
        // A connection reset can also surface as a bare SocketException or IOException ("Transport
        // endpoint is not connected"), not wrapped in HttpRequestException: unreachable all the same.
        catch (Exception e) when (e is HttpRequestException or IOException or System.Net.Sockets.SocketException)
        {
            throw new ClickHouseException($"ClickHouse at {_baseUri} is unreachable: {e.Message}", inner: e);
        }
        catch (TaskCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new ClickHouseException($"ClickHouse at {_baseUri} did not answer within {_http.Timeout.TotalSeconds:0} s.", inner: e);
        }

        if (!response.IsSuccessStatusCode)
        {
            using (response)
            {
                throw ClickHouseException.FromResponse(response.StatusCode, await response.Content.ReadAsStringAsync(cancellationToken));
            }
        }

        return response;
    }

    private Uri BuildUri(IReadOnlyDictionary<string, string> parameters)
    {
        var query = string.Join("&", parameters.Select(p => Uri.EscapeDataString(p.Key) + "=" + Uri.EscapeDataString(p.Value)));
        return new Uri(_baseUri, query.Length == 0 ? "" : "?" + query);
    }
}
