namespace Fathom.Models.Placement;

/// <summary>Where a weight lives and where the products that read it run.</summary>
public enum PlacementDevice
{
    /// <summary>On the GPU the model computes with (llama.cpp's buffer type <c>CUDA0</c>).</summary>
    Gpu,

    /// <summary>In host memory (the file's memory map), multiplied by the CPU (llama.cpp's <c>CPU</c>).</summary>
    Cpu,
}
