using System.Text.Json.Nodes;
using Fathom.Cli;
using Fathom.Cli.Commands;
using Fathom.Cuda.Discovery;
using Fathom.Cuda.Kernels;
using Fathom.Quants;

namespace Fathom.Cuda.Tests;

/// <summary>
/// <c>fathom bench --gpu-kernels</c>: on a GPU, a time for every type and shape from both kernels (for IQ1_S and
/// IQ2_XXS all three of theirs) and the measured bandwidth; without one, exit 1 with the reason.
/// </summary>
public sealed class GpuKernelBenchTests(ITestOutputHelper log)
{
    [Fact]
    public void GpuKernelsTimesEveryIntegerTypeOrSaysWhyNot()
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int exit = FathomCommandLine.Invoke(["bench", "--gpu-kernels", "--json"], output, error);
        CudaEnvironment environment = CudaEnvironment.Detect();
        if (environment.Usable)
        {
            Assert.True(exit == 0, error.ToString());
            JsonNode json = JsonNode.Parse(output.ToString())!;
            Assert.InRange(json["read_bandwidth_gbps"]!.GetValue<double>(), 50, 20_000);
            JsonArray products = json["products"]!.AsArray();
            // Eight types × four shapes, Q4_K and Q6_K at R1's two large shapes, then the grouped products.
            Assert.Equal(32 + 4 + GpuKernelBench.Groups.Length, products.Count);
            foreach (JsonNode? product in products)
            {
                Assert.True(Enum.TryParse(product!["type"]!.GetValue<string>(), out GgmlType type));
                Assert.True(QuantizedMatVec.Supports(type));
                Assert.True(product["float_us"]!.GetValue<double>() > 0);
                Assert.True(product["integer_us"]!.GetValue<double>() > 0);
                Assert.Equal(product["matrices"]!.GetValue<long>() * product["rows"]!.GetValue<long>() * TypeTraits.For(type).Layout.RowBytes(product["columns"]!.GetValue<int>()),
                    product["weight_bytes"]!.GetValue<long>());
                // Every layout was timed, the picked one among them.
                JsonObject layouts = product["layouts_us"]!.AsObject();
                Assert.Equal(QuantizedMatVec.Layouts(type).Count(), layouts.Count);
                bool blockTiles = product["iq_kernels"]!.GetValue<string>() == nameof(IqProductKernels.BlockTiles) && IqBlockProducts.Supports(type);
                bool rowPairs = product["iq_kernels"]!.GetValue<string>() == nameof(IqProductKernels.RowPairs) && IqBlockProducts.Supports(type);
                Assert.Equal(IqBlockProducts.Supports(type), product["block_tile_us"] is not null);
                Assert.Equal(IqBlockProducts.Supports(type), product["row_pair_us"] is not null);
                // The integer time is the kernel the backend takes: row pairs, block tiles, the global grid's picked layout, or the picked layout.
                if (rowPairs) Assert.Equal(product["integer_us"]!.GetValue<double>(), product["row_pair_us"]!.GetValue<double>());
                else if (blockTiles) Assert.Equal(product["integer_us"]!.GetValue<double>(), product["block_tile_us"]!.GetValue<double>());
                else if (product["iq_kernels"]!.GetValue<string>() == nameof(IqProductKernels.GlobalGrid) && IqBlockProducts.Supports(type))
                    Assert.Equal(product["integer_us"]!.GetValue<double>(), product["global_grid_layouts_us"]![product["global_grid_layout"]!.GetValue<string>()]!.GetValue<double>());
                else
                    Assert.Equal(product["integer_us"]!.GetValue<double>(), layouts[product["layout"]!.GetValue<string>()]!.GetValue<double>());
                // Types with fast kernels (Q4_K): those too, in every fast layout, the picked one among them.
                JsonObject? fast = product["fast_layouts_us"]?.AsObject();
                Assert.Equal(QuantizedMatVec.HasFastKernels(type), fast is not null);
                if (fast is not null)
                {
                    Assert.Equal(QuantizedMatVec.FastLayouts(type).Count(), fast.Count);
                    Assert.Equal(product["fast_us"]!.GetValue<double>(), fast[product["fast_layout"]!.GetValue<string>()]!.GetValue<double>());
                }
                // IQ1_S and IQ2_XXS: the global-grid kernel too, in every layout, its own picked one among them.
                JsonObject? globalGrid = product["global_grid_layouts_us"]?.AsObject();
                Assert.Equal(QuantizedMatVec.HasSharedGridKernels(type), globalGrid is not null);
                if (globalGrid is not null)
                {
                    Assert.Equal(layouts.Count, globalGrid.Count);
                    Assert.True(globalGrid.ContainsKey(product["global_grid_layout"]!.GetValue<string>()));
                }
            }
            log.WriteLine(output.ToString());
        }
        else
        {
            Assert.Equal(1, exit);
            Assert.StartsWith("error: --gpu-kernels needs a usable CUDA GPU: ", error.ToString());
            Assert.Equal("", output.ToString());
        }
    }
}
