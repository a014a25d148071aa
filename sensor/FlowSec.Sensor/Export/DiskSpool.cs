using System.Globalization;
using FlowSec.Api.V1;
using Google.Protobuf;

namespace FlowSec.Sensor.Export;

/// <summary>
/// Batches the sensor could not hand to the relay, kept on disk until it is back: one file per
/// batch, named by sequence and event count, replayed oldest first. Bounded in bytes: when full,
/// the oldest batches are deleted and their events counted as dropped, never silently.
/// Used by one thread (the exporter).
/// </summary>
public sealed class DiskSpool
{
    private readonly string _directory;
    private readonly long _maxBytes;
    private readonly SortedDictionary<ulong, (string Path, long Bytes, int Events)> _files = [];
    private ulong _nextSequence;
    private long _bytes;
    private long _droppedEvents;
    private long _corrupt;

    /// <summary>Opens (or creates) a spool directory, picking up batches left by an earlier run.</summary>
    public DiskSpool(string directory, long maxBytes)
    {
        _directory = directory;
        _maxBytes = maxBytes;
        Directory.CreateDirectory(directory);
        foreach (var path in Directory.EnumerateFiles(directory, "*.batch"))
        {
            var parts = Path.GetFileNameWithoutExtension(path).Split('-');
            if (parts.Length == 2 && ulong.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var seq) &&
                int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var events))
            {
                var bytes = new FileInfo(path).Length;
                _files[seq] = (path, bytes, events);
                _bytes += bytes;
                _nextSequence = Math.Max(_nextSequence, seq + 1);
            }
        }
    }

    /// <summary>Batches waiting on disk.</summary>
    public int Batches => _files.Count;

    /// <summary>Events waiting on disk.</summary>
    public long Events => _files.Values.Sum(f => (long)f.Events);

    /// <summary>Bytes on disk.</summary>
    public long Bytes => _bytes;

    /// <summary>Events deleted unsent because the spool was full.</summary>
    public long DroppedEvents => _droppedEvents;

    /// <summary>Spool files that could not be read back (deleted, counted).</summary>
    public long CorruptFiles => _corrupt;

    /// <summary>Writes a batch; makes room by deleting the oldest batches when over the limit.</summary>
    public void Append(EventBatch batch) => Append(batch.ToByteArray(), batch.Events.Count);

    /// <summary>
    /// Writes a batch given as its bytes (an <see cref="EventBatch"/> holding <paramref name="events"/>
    /// events); makes room by deleting the oldest batches when over the limit.
    /// </summary>
    public void Append(byte[] data, int events)
    {
        while (_files.Count > 0 && _bytes + data.Length > _maxBytes)
        {
            var oldest = _files.First();
            Remove(oldest.Key);
            _droppedEvents += oldest.Value.Events;
        }
        if (data.Length > _maxBytes)
        {
            _droppedEvents += events;
            return;
        }
        var seq = _nextSequence++;
        var path = Path.Combine(_directory, string.Create(CultureInfo.InvariantCulture, $"{seq:D20}-{events}.batch"));
        var temp = path + ".tmp";
        File.WriteAllBytes(temp, data);
        File.Move(temp, path); // a crash mid-write leaves a .tmp, never a truncated batch
        _files[seq] = (path, data.Length, events);
        _bytes += data.Length;
    }

    /// <summary>Sequence numbers of the spooled batches, oldest first.</summary>
    public IReadOnlyList<ulong> Sequences() => [.. _files.Keys];

    /// <summary>Reads a spooled batch; a file that cannot be read is deleted, counted, and null returned.</summary>
    public EventBatch? Read(ulong sequence)
    {
        if (!_files.TryGetValue(sequence, out var file))
        {
            return null;
        }
        try
        {
            return EventBatch.Parser.ParseFrom(File.ReadAllBytes(file.Path));
        }
        catch (Exception ex) when (ex is IOException or InvalidProtocolBufferException)
        {
            _corrupt++;
            _droppedEvents += file.Events;
            Remove(sequence);
            return null;
        }
    }

    /// <summary>Deletes a batch once the relay has acked it.</summary>
    public void Remove(ulong sequence)
    {
        if (_files.Remove(sequence, out var file))
        {
            _bytes -= file.Bytes;
            File.Delete(file.Path);
        }
    }
}
