namespace Fathom.Runtime;

/// <summary>The attention cache of one sequence: one <see cref="KvLayerCache"/> per layer, all of the same capacity.</summary>
public sealed class KvCache
{
    private readonly KvLayerCache[] _layers;

    public KvCache(int layers, int capacity, int keyWidth, int valueWidth, bool valuesShareKeys)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        _layers = new KvLayerCache[layers];
        for (int i = 0; i < layers; i++) _layers[i] = new KvLayerCache(capacity, keyWidth, valueWidth, valuesShareKeys);
        Capacity = capacity;
    }

    public int Capacity { get; }
    public int LayerCount => _layers.Length;
    public KvLayerCache this[int layer] => _layers[layer];
    public long Bytes => _layers.Sum(l => l.Bytes);
}
