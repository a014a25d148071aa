using System.Net;
using FlowSec.Sensor;
using FlowSec.Sensor.Attribution;
using FlowSec.Sensor.Capture;
using FlowSec.Sensor.Export;
using FlowSec.Sensor.Metrics;

// The per-node sensor: kernel capture → decode → attribute → batches streamed to the relay.
var builder = WebApplication.CreateSlimBuilder(args);
var sensor = builder.Configuration.GetSection("Sensor").Get<SensorOptions>() ?? new SensorOptions();
builder.Services.Configure<SensorOptions>(builder.Configuration.GetSection("Sensor"));
builder.WebHost.ConfigureKestrel(k => k.Listen(IPEndPoint.Parse(sensor.MetricsListen)));

builder.Services.AddSingleton<SensorEventQueue>();
builder.Services.AddTcpCapture(o => builder.Configuration.GetSection("Sensor").Bind(o));
builder.Services.AddSingleton<SensorStatusReporter>();
builder.Services.AddSingleton<CgroupResolver>();
builder.Services.AddSingleton<EndpointEnricher>();
builder.Services.AddSingleton<RelayExporter>();
builder.Services.AddHostedService(sp => sp.GetRequiredService<RelayExporter>());
builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10));

var app = builder.Build();
app.MapSensorMetrics();
await app.RunAsync();
