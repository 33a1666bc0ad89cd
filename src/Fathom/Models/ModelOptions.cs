using Fathom.Runtime;

namespace Fathom.Models;

/// <summary>How to run a model.</summary>
public sealed record ModelOptions
{
    /// <summary>CPU threads; 0 means one per logical processor (the <c>-t</c> option).</summary>
    public int Threads { get; init; }

    /// <summary>
    /// Makes the backend the model computes with (the model disposes it); null means the CPU backend with
    /// <see cref="Threads"/> threads. Other backends (Fathom.Cuda's) plug in here, so this library needs no
    /// reference to them.
    /// </summary>
    public Func<ModelOptions, IComputeBackend>? Backend { get; init; }

    /// <summary>
    /// For DeepSeek files with the older fused <c>attn_kv_b</c>: run attention as llama.cpp runs those files, with each
    /// token's keys and values decompressed per head and cached (heads × (qk_head + v_head) values per token and layer,
    /// where the absorbed form caches kv_lora_rank + rope dims), instead of absorbing the key decompression into the
    /// query. The same products, rounded where llama.cpp rounds them: with F16/BF16 weights the logits then match
    /// llama.cpp's instead of differing by its other rounding points (docs/engine.md). Off by default: the absorbed form
    /// needs a ninth of the cache and no decompression per token. Files with split <c>attn_k_b</c>/<c>attn_v_b</c>
    /// (and other architectures) ignore it. Not with a placing (GPU) backend, whose placement plans the latent cache.
    /// </summary>
    public bool DecompressFusedKvB { get; init; }
}
