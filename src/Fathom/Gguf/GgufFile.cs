using System.Diagnostics.CodeAnalysis;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace Fathom.Gguf;

/// <summary>
/// A GGUF model opened for reading: metadata and tensor table parsed and validated, tensor data left in place in a
/// read-only memory mapping (zero copy). Opening the first part of a split model (<c>NAME-00001-of-0000N.gguf</c>)
/// opens every part as one model: metadata from the first part, tensors from all. Dispose to unmap; pointers and
/// spans from this object are invalid afterwards. Reading (metadata, tensor table, data) is safe from many threads.
/// </summary>
public sealed unsafe class GgufFile : IDisposable
{
    private readonly MappedPart[] _mapped;
    private readonly Dictionary<string, GgufTensorInfo> _byName;
    private bool _disposed;

    private GgufFile(MappedPart[] mapped, GgufHeader[] headers)
    {
        _mapped = mapped;
        Metadata = headers[0].Metadata;
        Parts = headers.Select((h, i) => new GgufFilePart(mapped[i].Name, h.Version, h.Alignment, h.DataOffset, h.FileLength, h.Tensors.Count)).ToArray();
        Tensors = headers.SelectMany(h => h.Tensors).ToArray();
        _byName = new Dictionary<string, GgufTensorInfo>(Tensors.Count, StringComparer.Ordinal);
        foreach (GgufTensorInfo t in Tensors)
        {
            if (!_byName.TryAdd(t.Name, t))
                throw new GgufFormatException(mapped[t.FileIndex].Name, $"tensor '{t.Name}'", -1,
                    $"tensor name also appears in {mapped[_byName[t.Name].FileIndex].Name}");
        }
    }

    /// <summary>The files of the model, the first one first.</summary>
    public IReadOnlyList<GgufFilePart> Parts { get; }

    /// <summary>The path (or in-memory name) of the first file.</summary>
    public string Path => Parts[0].Path;

    public uint Version => Parts[0].Version;

    /// <summary>Metadata of the first file; for split models it includes the <c>split.*</c> keys.</summary>
    public GgufMetadata Metadata { get; }

    /// <summary>All tensors, in file order, part after part.</summary>
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }

    public bool TryGetTensor(string name, [NotNullWhen(true)] out GgufTensorInfo? tensor) => _byName.TryGetValue(name, out tensor);

    public GgufTensorInfo GetTensor(string name) =>
        _byName.TryGetValue(name, out GgufTensorInfo? t) ? t : throw new KeyNotFoundException($"{Path}: no tensor named '{name}'");

    /// <summary>Opens a GGUF file, or all parts of a split model when given its first part.</summary>
    public static GgufFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var mapped = new List<MappedPart>();
        try
        {
            MappedPart first = MappedPart.Map(path);
            mapped.Add(first);
            GgufHeader firstHeader = GgufParser.Parse(first.Pointer, first.Length, first.Name, 0);
            GgufHeader[] headers = IsSplit(firstHeader.Metadata)
                ? OpenSplitParts(path, firstHeader, mapped)
                : [firstHeader];
            return new GgufFile(mapped.ToArray(), headers);
        }
        catch
        {
            foreach (MappedPart m in mapped) m.Dispose();
            throw;
        }
    }

    /// <summary>Parses a whole GGUF file held in memory (no split parts). The buffer is pinned until disposal.</summary>
    public static GgufFile Parse(byte[] buffer, string name = "<memory>")
    {
        ArgumentNullException.ThrowIfNull(buffer);
        MappedPart part = MappedPart.Pin(buffer, name);
        try
        {
            GgufHeader header = GgufParser.Parse(part.Pointer, part.Length, name, 0);
            return new GgufFile([part], [header]);
        }
        catch
        {
            part.Dispose();
            throw;
        }
    }

    /// <summary>Address of the tensor's first byte inside the mapping; valid until this file is disposed.</summary>
    public byte* GetTensorPointer(GgufTensorInfo tensor)
    {
        CheckOwned(tensor);
        return _mapped[tensor.FileIndex].Pointer + tensor.DataOffset;
    }

    /// <summary>The tensor's bytes as a span, for tensors under 2 GiB (use <see cref="GetTensorPointer"/> above).</summary>
    public ReadOnlySpan<byte> GetTensorData(GgufTensorInfo tensor)
    {
        CheckOwned(tensor);
        if (tensor.ByteSize > int.MaxValue)
            throw new InvalidOperationException(
                $"Tensor '{tensor.Name}' is {tensor.ByteSize} bytes, too large for a span (2 GiB); use GetTensorPointer.");
        return new ReadOnlySpan<byte>(_mapped[tensor.FileIndex].Pointer + tensor.DataOffset, (int)tensor.ByteSize);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (MappedPart m in _mapped) m.Dispose();
    }

    private void CheckOwned(GgufTensorInfo tensor)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_byName.TryGetValue(tensor.Name, out GgufTensorInfo? own) || !ReferenceEquals(own, tensor))
            throw new ArgumentException($"Tensor '{tensor.Name}' does not belong to {Path}.", nameof(tensor));
    }

    // ---- split models ----

    private static bool IsSplit(GgufMetadata metadata) =>
        metadata.TryGetUInt32(GgufKeys.Split.Count, out uint count) && count > 1;

    private static GgufHeader[] OpenSplitParts(string path, GgufHeader first, List<MappedPart> mapped)
    {
        GgufMetadata meta = first.Metadata;
        int count = (int)meta.GetUInt32(GgufKeys.Split.Count);
        uint number = meta.TryGetUInt32(GgufKeys.Split.Number, out uint n) ? n : 0;
        if (number != 0)
            throw new GgufFormatException(path, GgufKeys.Split.Number, meta.OffsetOf(GgufKeys.Split.Number),
                $"this is part {number + 1} of {count} of a split model; open the first part (…-00001-of-{count:D5}.gguf)");
        if (!GgufSplitNames.TryParse(path, out string prefix, out int index, out int nameCount) || index != 0 || nameCount != count)
            throw new GgufFormatException(path, GgufKeys.Split.Count, meta.OffsetOf(GgufKeys.Split.Count),
                $"split.count is {count} but the file name does not end in -00001-of-{count:D5}.gguf, so the other parts cannot be found");
        bool hasTotal = meta.TryGetInt64(GgufKeys.Split.TensorsCount, out long total);

        var headers = new GgufHeader[count];
        headers[0] = first;
        for (int i = 1; i < count; i++)
        {
            string partPath = GgufSplitNames.PartPath(prefix, i, count);
            if (!File.Exists(partPath))
                throw new GgufFormatException(path, "split", -1, $"part {i + 1} of {count} is missing: {partPath}");
            MappedPart part = MappedPart.Map(partPath);
            mapped.Add(part);
            GgufHeader header = GgufParser.Parse(part.Pointer, part.Length, part.Name, i);
            GgufMetadata pm = header.Metadata;
            if (!pm.TryGetUInt32(GgufKeys.Split.Number, out uint partNumber) || partNumber != i)
                throw new GgufFormatException(partPath, GgufKeys.Split.Number, pm.OffsetOf(GgufKeys.Split.Number),
                    $"expected part index {i}, found {(pm.ContainsKey(GgufKeys.Split.Number) ? partNumber.ToString() : "none")}");
            if (!pm.TryGetUInt32(GgufKeys.Split.Count, out uint partCount) || partCount != count)
                throw new GgufFormatException(partPath, GgufKeys.Split.Count, pm.OffsetOf(GgufKeys.Split.Count),
                    $"expected {count} parts as in the first part, found {(pm.ContainsKey(GgufKeys.Split.Count) ? partCount.ToString() : "none")}");
            if (hasTotal && (!pm.TryGetInt64(GgufKeys.Split.TensorsCount, out long partTotal) || partTotal != total))
                throw new GgufFormatException(partPath, GgufKeys.Split.TensorsCount, pm.OffsetOf(GgufKeys.Split.TensorsCount),
                    $"does not match the first part's total of {total} tensors");
            headers[i] = header;
        }

        long actual = headers.Sum(h => (long)h.Tensors.Count);
        if (hasTotal && actual != total)
            throw new GgufFormatException(path, GgufKeys.Split.TensorsCount, meta.OffsetOf(GgufKeys.Split.TensorsCount),
                $"the {count} parts hold {actual} tensors, not the {total} this key announces");
        return headers;
    }

    // ---- memory: a read-only file mapping, or a pinned array for in-memory parsing ----

    private sealed class MappedPart : IDisposable
    {
        private MemoryMappedFile? _file;
        private MemoryMappedViewAccessor? _view;
        private GCHandle _pin;
        private bool _pointerAcquired;

        public required string Name { get; init; }
        public byte* Pointer { get; private set; }
        public long Length { get; private set; }

        public static MappedPart Map(string path)
        {
            var part = new MappedPart { Name = path };
            FileStream? stream = null;
            try
            {
                stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
                part.Length = stream.Length;
                if (part.Length == 0) throw new GgufFormatException(path, "header", 0, "file is empty");
                part._file = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
                stream = null; // the mapping owns it now
                part._view = part._file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
                byte* p = null;
                part._view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
                part._pointerAcquired = true;
                part.Pointer = p + part._view.PointerOffset;
                return part;
            }
            catch
            {
                stream?.Dispose();
                part.Dispose();
                throw;
            }
        }

        public static MappedPart Pin(byte[] buffer, string name)
        {
            var part = new MappedPart { Name = name, Length = buffer.Length, _pin = GCHandle.Alloc(buffer, GCHandleType.Pinned) };
            part.Pointer = (byte*)part._pin.AddrOfPinnedObject();
            return part;
        }

        public void Dispose()
        {
            if (_pointerAcquired)
            {
                _view!.SafeMemoryMappedViewHandle.ReleasePointer();
                _pointerAcquired = false;
            }
            _view?.Dispose();
            _file?.Dispose();
            if (_pin.IsAllocated) _pin.Free();
            Pointer = null;
        }
    }
}
