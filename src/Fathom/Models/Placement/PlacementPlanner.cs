using System.Globalization;
using Fathom.Gguf;

namespace Fathom.Models.Placement;

/// <summary>
/// Decides where each tensor of a model lives, with llama.cpp's precedence: <c>--override-tensor</c> rules first
/// (the first matching rule wins), then <c>--cpu-moe</c> / <c>--n-cpu-moe</c> for routed experts, then <c>-ngl</c>
/// for whole layers; or <c>--fit</c>, which fills the free GPU memory in priority order. Vectors (norms, biases)
/// always stay on the GPU with the activations. When the free memory is known, a placement that does not fit is a
/// <see cref="PlacementException"/> with the numbers, before anything is uploaded. For a backend that streams
/// CPU-placed routed experts to the GPU for prompt batches, the reserve holds one block's worth of them
/// (<see cref="DeviceMemoryReserve.StreamingBytes"/>): <c>--fit</c> leaves that room, and an explicit placement that fits
/// only without it still loads (the backend then keeps those prompts' experts on the CPU).
/// </summary>
public static class PlacementPlanner
{
    private const string Help =
        "options: --fit chooses a placement for the free memory; --cpu-moe or --n-cpu-moe N keep routed experts on the CPU; " +
        "-ngl N keeps only the last N layers on the GPU; --override-tensor REGEX=cpu moves chosen tensors; a smaller --ctx-size shrinks the KV cache";

    /// <summary>Plans the tensors of an open file.</summary>
    /// <param name="freeBytes">GPU memory free now; null skips the fit check (and rules out <see cref="PlacementOptions.Fit"/>).</param>
    /// <param name="backendBytes">The backend's own fixed buffers, reserved with the KV cache and scratch.</param>
    /// <param name="streamsCpuExperts">Whether the backend streams CPU-placed routed experts to the GPU for prompts.</param>
    public static PlacementPlan Plan(GgufFile file, ModelHyperparameters config, PlacementOptions options, long? freeBytes, long backendBytes = 0,
        bool streamsCpuExperts = false)
    {
        ArgumentNullException.ThrowIfNull(file);
        return Plan(file.Tensors.Select(t => new TensorSummary(t.Name, t.Shape, t.Type, t.ElementCount, t.ByteSize, TensorGroups.Classify(t.Name), t.FileIndex)),
            config, options, freeBytes, backendBytes, streamsCpuExperts);
    }

    public static PlacementPlan Plan(IEnumerable<TensorSummary> tensors, ModelHyperparameters config, PlacementOptions options, long? freeBytes, long backendBytes = 0,
        bool streamsCpuExperts = false)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        int blocks = config.BlockCount;
        DeviceMemoryReserve reserve = DeviceMemoryReserve.For(config, options.ContextSize, backendBytes);
        List<PlacedTensor> candidates = [.. tensors.Select(t => Candidate(t, config))];

        // Vectors, and matrices an override rule names, are decided before anything else.
        var fixedDevice = new PlacementDevice?[candidates.Count];
        for (int i = 0; i < candidates.Count; i++)
        {
            PlacedTensor t = candidates[i];
            fixedDevice[i] = !t.IsMatrix ? PlacementDevice.Gpu : options.Overrides.FirstOrDefault(o => o.Pattern.IsMatch(t.Name))?.Device;
        }

        if (!options.Fit)
        {
            List<PlacedTensor> placed = [.. candidates.Select((t, i) => t with { Device = fixedDevice[i] ?? ByOptions(t, options, blocks) })];
            var plan = new PlacementPlan(placed, options.ToString(), reserve with { StreamingBytes = streamsCpuExperts ? LargestCpuExpertBlock(placed) : 0 },
                options.ContextSize, freeBytes);
            if (freeBytes is long free && plan.GpuBytes - plan.Reserve.StreamingBytes > free) throw new PlacementException(NotFitting(plan, free));
            return plan;
        }
        if (freeBytes is not long available) throw new InvalidOperationException("--fit needs the GPU's free memory");
        return Fit(candidates, fixedDevice, options, reserve, available, blocks, streamsCpuExperts);
    }

    /// <summary>The most bytes of CPU-placed routed experts in one block: what streaming them for a prompt copies at once.</summary>
    private static long LargestCpuExpertBlock(IEnumerable<PlacedTensor> placed) =>
        LargestBlock(placed.Where(t => t.Group == TensorGroup.RoutedExperts && t.Device == PlacementDevice.Cpu));

    /// <summary>The most bytes of <paramref name="tensors"/> in one block (0 for none).</summary>
    private static long LargestBlock(IEnumerable<PlacedTensor> tensors) =>
        tensors.GroupBy(t => t.Layer).Select(g => g.Sum(t => t.Bytes)).DefaultIfEmpty(0).Max();

    private static PlacedTensor Candidate(TensorSummary t, ModelHyperparameters config)
    {
        bool matrix = t.Shape.Length >= 2 && t.Shape.Skip(1).Any(n => n > 1);
        int layer = TensorGroups.TryParseBlock(t.Name, out int block, out _) ? block
            : t.Name.StartsWith("output", StringComparison.Ordinal) || t.Name.StartsWith("token_embd", StringComparison.Ordinal) ? config.BlockCount
            : -1;
        return new PlacedTensor(t.Name, t.Group, layer, t.Bytes, matrix, PlacementDevice.Gpu);
    }

    /// <summary><c>--cpu-moe</c>/<c>--n-cpu-moe</c>, then <c>-ngl</c>.</summary>
    private static PlacementDevice ByOptions(PlacedTensor t, PlacementOptions options, int blocks)
    {
        if (t.Group == TensorGroup.RoutedExperts && (options.CpuMoe || (t.Layer >= 0 && t.Layer < options.CpuMoeLayers))) return PlacementDevice.Cpu;
        if (options.GpuLayers is not int gpuLayers || t.Layer < 0) return PlacementDevice.Gpu;
        return OnGpuLayers(t.Layer, gpuLayers, blocks) ? PlacementDevice.Gpu : PlacementDevice.Cpu;
    }

    /// <summary>
    /// <c>-ngl N</c> as llama.cpp counts it: layers 0..blocks, the output layer being the last, and the last N of them
    /// on the GPU (<c>-ngl 1</c> is the output layer alone, <c>-ngl blocks+1</c> everything).
    /// </summary>
    private static bool OnGpuLayers(int layer, int gpuLayers, int blocks) => layer >= blocks + 1 - gpuLayers;

    /// <summary>
    /// Fills the budget (free memory less the KV cache, scratch and <see cref="PlacementOptions.FitTargetBytes"/>): every
    /// weight when all fit; otherwise everything but the routed experts, then the routed experts of the last blocks
    /// while they fit (as <c>--n-cpu-moe N</c>); otherwise every routed expert on the CPU and, from the output layer
    /// back, the layers that fit (as <c>-ngl N --cpu-moe</c>).
    /// </summary>
    private static PlacementPlan Fit(List<PlacedTensor> candidates, PlacementDevice?[] fixedDevice, PlacementOptions options, DeviceMemoryReserve reserve, long free, int blocks,
        bool streamsCpuExperts)
    {
        long budget = free - reserve.Bytes - options.FitTargetBytes;
        long fixedGpu = 0;
        for (int i = 0; i < candidates.Count; i++)
            if (fixedDevice[i] == PlacementDevice.Gpu) fixedGpu += candidates[i].Bytes;
        if (fixedGpu > budget)
        {
            List<PlacedTensor> least = [.. candidates.Select((t, i) => t with { Device = fixedDevice[i] ?? PlacementDevice.Cpu })];
            var plan = new PlacementPlan(least, "--fit: nothing more fits", reserve, options.ContextSize, free);
            throw new PlacementException(NotFitting(plan, free, options.FitTargetBytes));
        }
        long room = budget - fixedGpu;
        bool Undecided(int i) => fixedDevice[i] is null;
        bool IsExpert(int i) => candidates[i].Group == TensorGroup.RoutedExperts && candidates[i].Layer >= 0 && candidates[i].Layer < blocks;
        long Sum(Func<int, bool> which) => Enumerable.Range(0, candidates.Count).Where(i => Undecided(i) && which(i)).Sum(i => candidates[i].Bytes);

        Func<int, PlacementDevice> device;
        string choice;
        long nonExperts = Sum(i => !IsExpert(i));
        // Once some routed experts stay on the CPU, a streaming backend needs room for one block of them (at most the largest).
        long streaming = streamsCpuExperts
            ? LargestBlock(Enumerable.Range(0, candidates.Count).Where(i => Undecided(i) && IsExpert(i)).Select(i => candidates[i]))
            : 0;
        if (Sum(_ => true) <= room)
        {
            device = _ => PlacementDevice.Gpu;
            choice = "everything on the GPU";
        }
        else if (nonExperts + streaming <= room)
        {
            // Routed experts from the last block down, while each block's fit: the first blocks' stay on the CPU.
            long left = room - nonExperts - streaming;
            int cpuMoeLayers = 0;
            for (int b = blocks - 1; b >= 0; b--)
            {
                long experts = Sum(i => IsExpert(i) && candidates[i].Layer == b);
                if (experts > left)
                {
                    cpuMoeLayers = b + 1;
                    break;
                }
                left -= experts;
            }
            device = i => IsExpert(i) && candidates[i].Layer < cpuMoeLayers ? PlacementDevice.Cpu : PlacementDevice.Gpu;
            choice = $"--n-cpu-moe {cpuMoeLayers}";
        }
        else
        {
            // All of -ngl blocks+1 is known not to fit: the most layers that do, counted from the output layer back.
            int gpuLayers = blocks;
            bool OnGpu(int i, int layers) => !IsExpert(i) && OnGpuLayers(candidates[i].Layer, layers, blocks);
            while (gpuLayers > 0 && Sum(i => OnGpu(i, gpuLayers)) + streaming > room) gpuLayers--;
            int chosen = gpuLayers;
            device = i => OnGpu(i, chosen) ? PlacementDevice.Gpu : PlacementDevice.Cpu;
            choice = $"-ngl {chosen} --cpu-moe";
        }
        List<PlacedTensor> placed = [.. candidates.Select((t, i) => t with { Device = fixedDevice[i] ?? device(i) })];
        if (streamsCpuExperts) reserve = reserve with { StreamingBytes = LargestCpuExpertBlock(placed) };
        string overrides = string.Concat(options.Overrides.Select(o => $" --override-tensor {o}"));
        string description = string.Create(CultureInfo.InvariantCulture,
            $"--fit{overrides} (as {choice}{overrides}; {PlacementPlan.Gib(free)} free, {PlacementPlan.Gib(options.FitTargetBytes)} left free)");
        return new PlacementPlan(placed, description, reserve, options.ContextSize, free);
    }

    private static string NotFitting(PlacementPlan plan, long free, long target = 0)
    {
        string gpu = string.Join(", ", plan.Parts.Where(p => p.GpuBytes > 0).Select(p => $"{PlacementPlan.PartName(p.Group)} {PlacementPlan.Gib(p.GpuBytes)}"));
        string cpu = string.Join(", ", plan.Parts.Where(p => p.CpuBytes > 0).Select(p => $"{PlacementPlan.PartName(p.Group)} {PlacementPlan.Gib(p.CpuBytes)}"));
        string leftFree = target > 0 ? $" (with {PlacementPlan.Gib(target)} to be left free)" : "";
        return $"the model does not fit on the GPU as placed ({plan.Choice}): {PlacementPlan.Gib(plan.GpuBytes + target)} needed{leftFree}, {PlacementPlan.Gib(free)} free\n"
            + $"  on the GPU: {(gpu.Length == 0 ? "no weights" : gpu)}; KV cache ({plan.ContextSize} tokens) {PlacementPlan.Gib(plan.Reserve.KvCacheBytes)}; scratch (estimate) {PlacementPlan.Gib(plan.Reserve.ScratchBytes)}\n"
            + $"  on the CPU: {(cpu.Length == 0 ? "nothing" : cpu)}\n"
            + $"  {Help}";
    }
}
