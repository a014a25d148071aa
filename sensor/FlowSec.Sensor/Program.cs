using System.Net;
using FlowSec.Sensor;
using FlowSec.Sensor.Attribution;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using FlowSec.Sensor.Fallback;
using FlowSec.Sensor.Metrics;

// The per-node sensor: kernel capture → decode → attribute → batches streamed to the relay.
var builder = WebApplication.CreateSlimBuilder(args);
var sensor = builder.Configuration.GetSection("Sensor").Get<SensorOptions>() ?? new SensorOptions();
builder.Services.Configure<SensorOptions>(builder.Configuration.GetSection("Sensor"));
builder.WebHost.ConfigureKestrel(k => k.Listen(IPEndPoint.Parse(sensor.MetricsListen)));

// A sensor scoped to a cgroup subtree speaks for that subtree only: a "node" of its own.
CgroupScope scope;
try
{
    scope = CgroupScope.For(sensor.Cgroup, CgroupResolver.DefaultRoot);
    var relays = RelayExporter.RelayAddresses(sensor.Relay);
    if (sensor.Tls.IsConfigured && relays.FirstOrDefault(r => r.Scheme != Uri.UriSchemeHttps) is { } plain)
    {
        throw new ArgumentException($"--Sensor:Tls is set but relay {plain} is not https://");
    }
    // Read the TLS files now: a missing key should stop the sensor at start, not at each reconnect.
    _ = sensor.Tls.IsConfigured ? sensor.Tls.ToSslOptions() : null;
}
catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
{
    Console.Error.WriteLine($"flowsec-sensor: {ex.Message}");
    return 2;
}
builder.Services.AddSingleton(scope);
// Events are enriched and encoded by the capture thread that queues them (see SensorEventQueue).
builder.Services.AddSingleton(sp => new SensorEventQueue(scope: sp.GetRequiredService<CgroupScope>(), enricher: sp.GetRequiredService<EndpointEnricher>()));
// Registered first so it stops last: captures stop, then the exporter drains what they produced.
builder.Services.AddSingleton<RelayExporter>();
builder.Services.AddHostedService(sp => sp.GetRequiredService<RelayExporter>());

// Probe what this kernel allows: eBPF capture where it can run, the labelled fallback where not.
var features = KernelFeatures.Probe(sensor.NoBpf);
builder.Services.AddSingleton(features);
if (features.BpfUsable)
{
    builder.Services.AddTcpCapture(o => builder.Configuration.GetSection("Sensor").Bind(o));
    // cgroup_skb programs attach to the scope's directory: they then only run for its sockets.
    builder.Services.AddUdpFlowCapture(o =>
    {
        o.CgroupPath = scope.Directory;
        builder.Configuration.GetSection("Sensor:Udp").Bind(o);
    });
    builder.Services.AddDropCapture(o => builder.Configuration.GetSection("Sensor:Drops").Bind(o));
    builder.Services.AddProcessCapture(o =>
    {
        builder.Configuration.GetSection("Sensor").Bind(o);
        builder.Configuration.GetSection("Sensor:Process").Bind(o);
    });
    builder.Services.AddFileCapture(o =>
    {
        builder.Configuration.GetSection("Sensor").Bind(o);
        builder.Configuration.GetSection("Sensor:File").Bind(o);
    });
    builder.Services.AddDnsCapture(o =>
    {
        builder.Configuration.GetSection("Sensor").Bind(o);
        o.CgroupPath = scope.Directory;
        builder.Configuration.GetSection("Sensor:Dns").Bind(o);
    });
}
builder.Services.AddSingleton<FallbackCapture>();
builder.Services.AddSingleton<ICaptureStatus>(sp => sp.GetRequiredService<FallbackCapture>());
builder.Services.AddHostedService(sp => sp.GetRequiredService<FallbackCapture>());
builder.Services.AddSingleton<SensorStatusReporter>();
builder.Services.AddSingleton<CgroupResolver>();
builder.Services.AddSingleton<EndpointEnricher>();
builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10));

var app = builder.Build();
foreach (var feature in features.Features)
{
    app.Logger.LogInformation("kernel feature {Name}: {State} ({Detail})", feature.Name, feature.Available ? "yes" : "no", feature.Detail);
}
if (!features.BpfUsable)
{
    app.Logger.LogWarning("eBPF capture unavailable ({Reason}); running the /proc fallback collectors", features.BpfUnusableReason);
}
if (scope.IsScoped)
{
    app.Logger.LogInformation("Scoped to cgroup {Cgroup}: events of other cgroups are left out (counter scope_events_skipped)", scope.Directory);
}
app.MapSensorMetrics();
await app.RunAsync();
return 0;
