using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace FlowSec.Relay.Storage;

/// <summary>Registers ClickHouse storage with the relay's services.</summary>
public static class ClickHouseStorageExtensions
{
    /// <summary>
    /// Binds <see cref="ClickHouseOptions"/> from the "ClickHouse" section and registers the HTTP
    /// client, schema, <see cref="ClickHouseEventStore"/> and the <see cref="ClickHouseFlowWriter"/>
    /// hosted service, which creates the schema on start (retrying while ClickHouse is down, without
    /// failing the relay) and then stores every event type in its table.
    /// </summary>
    public static IServiceCollection AddClickHouseStorage(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<ClickHouseOptions>().Bind(configuration.GetSection(ClickHouseOptions.SectionName));
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<ClickHouseOptions>>().Value);
        services.AddSingleton<ClickHouseHttpClient>();
        services.AddSingleton<ClickHouseSchema>();
        services.AddSingleton<StoredBatches>();
        services.AddSingleton<ClickHouseEventStore>();
        services.AddSingleton<ClickHouseFlowWriter>();
        services.AddHostedService(sp => sp.GetRequiredService<ClickHouseFlowWriter>());
        services.AddSingleton<ClickHouseRetention>();
        services.AddHostedService(sp => sp.GetRequiredService<ClickHouseRetention>());
        return services;
    }
}
