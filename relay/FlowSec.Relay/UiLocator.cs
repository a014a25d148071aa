namespace FlowSec.Relay;

/// <summary>Finds the static UI directory: the configured one, or <c>ui/</c> in a parent of the binary (a repo checkout).</summary>
public static class UiLocator
{
    /// <summary>Returns the UI directory; throws with a clear message when none is found.</summary>
    public static string Find(string configured)
    {
        if (configured.Length > 0)
        {
            return Directory.Exists(configured)
                ? Path.GetFullPath(configured)
                : throw new DirectoryNotFoundException($"UI directory {configured} does not exist");
        }
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "ui", "index.html");
            if (File.Exists(candidate))
            {
                return Path.GetDirectoryName(candidate)!;
            }
        }
        throw new DirectoryNotFoundException("no ui/index.html found above " + AppContext.BaseDirectory + "; pass --Relay:UiDirectory=PATH");
    }
}
