namespace Fathom.Runtime;

/// <summary>
/// One layer's attention cache: for every position so far, a key row of <see cref="KeyWidth"/> floats and a value
/// row of <see cref="ValueWidth"/> floats. Values may live inside the key rows (<see cref="ValuesShareKeys"/>): MLA in
/// absorbed form keeps one latent row per token whose first <c>kv_lora_rank</c> elements are both key and value.
/// Arrays are pinned so the CPU kernels can address them without fixing.
/// </summary>
public sealed class KvLayerCache
{
    public KvLayerCache(int capacity, int keyWidth, int valueWidth, bool valuesShareKeys)
    {
        if (valuesShareKeys && valueWidth > keyWidth) throw new ArgumentException("shared values must fit inside the key row");
        Capacity = capacity;
        KeyWidth = keyWidth;
        ValueWidth = valueWidth;
        ValuesShareKeys = valuesShareKeys;
        Keys = GC.AllocateArray<float>(checked(capacity * keyWidth), pinned: true);
        Values = valuesShareKeys ? Keys : GC.AllocateArray<float>(checked(capacity * valueWidth), pinned: true);
    }

    public int Capacity { get; }
    public int KeyWidth { get; }
    public int ValueWidth { get; }
    public bool ValuesShareKeys { get; }
    public float[] Keys { get; }
    public float[] Values { get; }

    /// <summary>Distance in floats between the value rows of consecutive positions.</summary>
    public int ValueStride => ValuesShareKeys ? KeyWidth : ValueWidth;

    public Span<float> KeyRow(int position) => Keys.AsSpan(position * KeyWidth, KeyWidth);
    public Span<float> ValueRow(int position) => Values.AsSpan(position * ValueStride, ValueWidth);

    public long Bytes => ValuesShareKeys ? Keys.LongLength * sizeof(float) : (Keys.LongLength + Values.LongLength) * sizeof(float);
}
