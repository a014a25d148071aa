using System.CommandLine;
using FlowSec.Api.Grpc;
using FlowSec.Cli;
using FlowSec.Cli.Observe;
using FlowSec.Cli.Query;
using FlowSec.Cli.Status;
using FlowSec.Cli.Up;

// flowsec: run FlowSec on this host, see its status, query what it stored.
var relay = new RelayConnection();
var root = new RootCommand("FlowSec: network flows and runtime security for Linux nodes")
{
    UpCommand.Create(),
    StatusCommand.Create(relay),
    QueryCommand.Create(relay),
    ObserveCommand.Create(relay),
};
try
{
    return await root.Parse(args).InvokeAsync(new InvocationConfiguration
    {
        // Our own handlers below print one line; the default one would print a stack trace.
        EnableDefaultExceptionHandler = false,
        // `up` handles SIGINT/SIGTERM itself and stops its children, which takes longer than the
        // library's default grace (it would exit 130 mid-shutdown and orphan relay and ClickHouse).
        ProcessTerminationTimeout = null,
    });
}
catch (GrpcException ex)
{
    Console.Error.WriteLine($"flowsec: {ex.Detail} ({ex.Status})");
    return 1;
}
