using BenchmarkDotNet.Attributes;
using Fathom.Models;
using Fathom.Models.Placement;

namespace Fathom.Benchmarks;

/// <summary>
/// What a hybrid placement adds to every product on the GPU backend: <see cref="PlacementPlan.DeviceOf"/> for the
/// weight's name, in a plan of DeepSeek-R1's 61 blocks (about 1,100 tensors). It should cost tens of nanoseconds
/// and allocate nothing.
/// </summary>
[MemoryDiagnoser]
public class PlacementLookupBenchmarks
{
    private PlacementPlan _plan = null!;

    [Params("blk.40.ffn_up_exps.weight[17]", "blk.40.attn_kv_b.weight.k[3].T", "blk.40.attn_q_b.weight")]
    public string Weight { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        string[] perBlock =
        [
            "attn_norm.weight", "attn_q_a.weight", "attn_q_a_norm.weight", "attn_q_b.weight", "attn_kv_a_mqa.weight", "attn_kv_a_norm.weight",
            "attn_kv_b.weight", "attn_output.weight", "ffn_norm.weight", "ffn_gate_inp.weight", "exp_probs_b.bias", "ffn_gate_exps.weight",
            "ffn_up_exps.weight", "ffn_down_exps.weight", "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight",
        ];
        var tensors = new List<PlacedTensor>();
        for (int b = 0; b < 61; b++)
            foreach (string local in perBlock)
            {
                string name = $"blk.{b}.{local}";
                TensorGroup group = TensorGroups.Classify(name);
                tensors.Add(new PlacedTensor(name, group, b, 1 << 20, !local.Contains("norm") && !local.EndsWith(".bias"),
                    group == TensorGroup.RoutedExperts ? PlacementDevice.Cpu : PlacementDevice.Gpu));
            }
        _plan = new PlacementPlan(tensors, "--cpu-moe", new DeviceMemoryReserve(0, 0), 4096, null);
    }

    [Benchmark]
    public PlacementDevice DeviceOf() => _plan.DeviceOf(Weight);
}
