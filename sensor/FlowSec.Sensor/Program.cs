using FlowSec.Sensor;
using FlowSec.Sensor.Attribution;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;

// The per-node sensor: kernel capture → decode → attribute → batches streamed to the relay.
var builder = Host.CreateApplicationBuilder(args);
builder.Services.Configure<SensorOptions>(builder.Configuration.GetSection("Sensor"));
builder.Services.AddSingleton<SensorEventQueue>();
builder.Services.AddTcpCapture(o => builder.Configuration.GetSection("Sensor").Bind(o));
builder.Services.AddSingleton<SensorStatusReporter>();
builder.Services.AddSingleton<CgroupResolver>();
builder.Services.AddSingleton<EndpointEnricher>();
builder.Services.AddHostedService<RelayExporter>();
builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10));

await builder.Build().RunAsync();
