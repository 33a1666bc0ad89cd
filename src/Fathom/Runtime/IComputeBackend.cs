using System.Numerics.Tensors;

namespace Fathom.Runtime;

/// <summary>
/// The operations a model's forward pass is made of. Activations are row-major: <c>tokens</c> rows, one per
/// token of the batch. A backend owns its threads; one forward pass uses it at a time. Model code touches activations
/// only through these operations (a GPU backend keeps them on the device between operations); the default
/// implementations are the CPU's.
/// </summary>
public interface IComputeBackend : IDisposable
{
    /// <summary>Threads the backend computes with.</summary>
    int Threads { get; }

    /// <summary>
    /// <c>output[t, r] = weight.Row(r) · input[t]</c> for every token <c>t</c>: each input row is converted once
    /// to the weight's activation format, then dotted with every weight row.
    /// </summary>
    void MatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens);

    /// <summary>
    /// Several one-token products in one call (a token's chosen experts, MLA's per-head matrices):
    /// <c>outputs[i · outputStride + r] = weights[i].Row(r) · inputs[i · inputStride ..]</c>, for every matrix
    /// <c>i</c> and row <c>r</c>. An <paramref name="inputStride"/> of 0 gives every matrix the same input.
    /// Results equal one <see cref="MatMul"/> per matrix; a backend may convert a shared input once per activation
    /// format and spread all the matrices' rows over its threads at once. The default is that loop of MatMul calls.
    /// </summary>
    void MatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
    {
        for (int i = 0; i < weights.Length; i++)
        {
            WeightMatrix w = weights[i];
            MatMul(w, inputs.Slice(i * inputStride, w.Columns), outputs.Slice(i * outputStride, w.Rows), 1);
        }
    }

    /// <summary>
    /// <see cref="MatMulGroup(ReadOnlySpan{WeightMatrix}, ReadOnlySpan{float}, int, Span{float}, int)"/>, then each
    /// matrix's bias added to its output as <see cref="AddBias"/> adds it (a null entry of <paramref name="biases"/>:
    /// none); the query, key and value projections of one token. A backend may add each bias as its product is written.
    /// </summary>
    void MatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride, ReadOnlySpan<float[]?> biases)
    {
        if (biases.Length < weights.Length) throw new ArgumentException($"{weights.Length} products need as many bias entries, not {biases.Length}", nameof(biases));
        MatMulGroup(weights, inputs, inputStride, outputs, outputStride);
        for (int i = 0; i < weights.Length; i++)
            if (biases[i] is { } bias) AddBias(outputs.Slice(i * outputStride, weights[i].Rows), bias, 1);
    }

    /// <summary>
    /// <c>residual += weight · input</c> for every token (a projection back into the residual stream): <see cref="MatMul"/>
    /// into <paramref name="product"/> (<c>tokens × Rows</c> values), then <see cref="Add"/> of it into
    /// <paramref name="residual"/>. A backend may add each result as it is written and leave <paramref name="product"/> alone.
    /// </summary>
    void MatMulResidual(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> residual, Span<float> product, int tokens)
    {
        int n = checked(tokens * weight.Rows);
        MatMul(weight, input, product, tokens);
        Add(residual[..n], product);
    }

    /// <summary>
    /// <see cref="MatMulResidual"/>, then <see cref="RmsNorm"/> of the updated residual (<c>tokens × Rows</c> values) by
    /// <paramref name="normWeight"/> into <paramref name="normed"/>: a projection back into the residual stream and the
    /// next sublayer's norm (the attention's output, then the feed-forward's norm). A backend may add the product and
    /// normalize the sum in one pass.
    /// </summary>
    void MatMulResidualRmsNorm(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> residual, Span<float> product, int tokens,
        ReadOnlySpan<float> normWeight, Span<float> normed, float epsilon)
    {
        int n = checked(tokens * weight.Rows);
        MatMulResidual(weight, input, residual, product, tokens);
        RmsNorm(residual[..n], normWeight, normed, tokens, epsilon);
    }

    /// <summary>
    /// Products with transposed matrices: each input weighs the rows of its matrix. For every token <c>t</c> and matrix
    /// <c>i</c>, with <c>x = inputs[t · inputTokenStride + i · inputStride ..]</c> (<c>Rows</c> values) and
    /// <c>y = outputs[t · outputTokenStride + i · outputStride ..]</c> (<c>Columns</c> values),
    /// <c>y[c] = Σ_r x[r] · weights[i][r, c]</c>, as <see cref="WeightMatrix.MultiplyTransposed"/> computes it (rows
    /// dequantized and added in order) or with the rows added in another fixed order (the CUDA backend's default splits
    /// them between threads); either way a token's result does not depend on the batch it came in.
    /// MLA's absorbed query where a file stores each head's key decompression untransposed (the fused
    /// <c>attn_kv_b</c>): read in its own format instead of from a float copy four to eight times its size.
    /// The default runs <see cref="WeightMatrix.MultiplyTransposed"/> per (token, matrix) on the calling thread, on
    /// host copies of the spans (<see cref="ReadToHost"/> before, <see cref="WrittenOnHost"/> after).
    /// </summary>
    void TransposedMatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
        int tokens = 1, int inputTokenStride = 0, int outputTokenStride = 0)
    {
        int widest = 0;
        foreach (WeightMatrix w in weights) widest = Math.Max(widest, w.Columns);
        ReadToHost(System.Runtime.InteropServices.MemoryMarshal.CreateSpan(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(inputs), inputs.Length));
        float[] row = System.Buffers.ArrayPool<float>.Shared.Rent(widest);
        try
        {
            for (int t = 0; t < tokens; t++)
                for (int i = 0; i < weights.Length; i++)
                    weights[i].MultiplyTransposed(inputs.Slice(t * inputTokenStride + i * inputStride, weights[i].Rows),
                        outputs.Slice(t * outputTokenStride + i * outputStride, weights[i].Columns), row);
            WrittenOnHost(outputs);
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(row);
        }
    }

    /// <summary>
    /// <see cref="MatMulGroup(ReadOnlySpan{WeightMatrix}, ReadOnlySpan{float}, int, Span{float}, int)"/> for a batch of
    /// tokens (MLA's per-head k_b and v_b over a prompt): for every token <c>t</c> and matrix <c>i</c>,
    /// <c>outputs[t · outputTokenStride + i · outputStride + r] = weights[i].Row(r) · inputs[t · inputTokenStride + i · inputStride ..]</c>.
    /// Results equal one <see cref="MatMul"/> per matrix over the matrix's tokens gathered into contiguous rows, which
    /// is what the default does (on host copies: <see cref="ReadToHost"/> before, <see cref="WrittenOnHost"/> after);
    /// one token is the one-token group. A GPU runs every matrix in one launch, and may therefore require the matrices
    /// to share one shape and type, as a stack of heads does (the CUDA backend throws otherwise).
    /// </summary>
    void MatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
        int tokens, int inputTokenStride, int outputTokenStride)
    {
        if (tokens <= 0 || weights.IsEmpty) return;
        if (tokens == 1)
        {
            MatMulGroup(weights, inputs, inputStride, outputs, outputStride);
            return;
        }
        int widestIn = 0, widestOut = 0;
        foreach (WeightMatrix w in weights) (widestIn, widestOut) = (Math.Max(widestIn, w.Columns), Math.Max(widestOut, w.Rows));
        ReadToHost(System.Runtime.InteropServices.MemoryMarshal.CreateSpan(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(inputs), inputs.Length));
        ReadToHost(outputs); // values between the written rows stay as they are
        float[] gathered = System.Buffers.ArrayPool<float>.Shared.Rent(checked(tokens * widestIn));
        float[] products = System.Buffers.ArrayPool<float>.Shared.Rent(checked(tokens * widestOut));
        try
        {
            for (int i = 0; i < weights.Length; i++)
            {
                WeightMatrix w = weights[i];
                for (int t = 0; t < tokens; t++)
                    inputs.Slice(t * inputTokenStride + i * inputStride, w.Columns).CopyTo(gathered.AsSpan(t * w.Columns, w.Columns));
                MatMul(w, gathered.AsSpan(0, tokens * w.Columns), products.AsSpan(0, tokens * w.Rows), tokens);
                for (int t = 0; t < tokens; t++)
                    products.AsSpan(t * w.Rows, w.Rows).CopyTo(outputs.Slice(t * outputTokenStride + i * outputStride, w.Rows));
            }
            WrittenOnHost(outputs);
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(gathered);
            System.Buffers.ArrayPool<float>.Shared.Return(products);
        }
    }

    /// <summary>
    /// Mixture-of-experts routing of <paramref name="tokens"/> tokens (<see cref="ExpertRouting.Route"/>): row
    /// <c>t</c> of <paramref name="logits"/> (<c>ExpertCount</c> router logits, overwritten with the scores) gives
    /// token <c>t</c>'s <c>UsedCount</c> expert ids (as floats, best first) at <c>ids[t · UsedCount ..]</c> and their
    /// weights at <c>weights[t · UsedCount ..]</c>. A GPU leaves them on the device, where
    /// <see cref="MatMulExperts"/> and <see cref="AddWeightedRows"/> read them. The default routes on the host
    /// (<see cref="ReadToHost"/> before, <see cref="WrittenOnHost"/> after).
    /// </summary>
    void RouteExperts(ExpertRouting routing, Span<float> logits, Span<float> ids, Span<float> weights, int tokens)
    {
        int experts = routing.ExpertCount, used = routing.UsedCount;
        if (tokens <= 0) return;
        if (logits.Length < (long)tokens * experts || ids.Length < (long)tokens * used || weights.Length < (long)tokens * used)
            throw new ArgumentException($"routing {tokens} tokens needs {tokens}×{experts} logits and {tokens}×{used} ids and weights");
        Span<float> scores = logits[..(tokens * experts)];
        ReadToHost(scores);
        float[] selection = System.Buffers.ArrayPool<float>.Shared.Rent(experts);
        try
        {
            for (int t = 0; t < tokens; t++)
                routing.Route(scores.Slice(t * experts, experts), selection, ids.Slice(t * used, used), weights.Slice(t * used, used));
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(selection);
        }
        WrittenOnHost(scores);
        WrittenOnHost(ids[..(tokens * used)]);
        WrittenOnHost(weights[..(tokens * used)]);
    }

    /// <summary>
    /// One token's MoE router and routing: <see cref="MatMul"/> of <paramref name="router"/> over
    /// <paramref name="input"/> into <paramref name="logits"/> (<c>router.Rows</c> values, the routing's
    /// <c>ExpertCount</c>), then <see cref="RouteExperts"/> of that one row into <paramref name="ids"/> and
    /// <paramref name="weights"/>. A backend may do both in one launch; the default is the two operations.
    /// </summary>
    void RouteToken(WeightMatrix router, ExpertRouting routing, ReadOnlySpan<float> input, Span<float> logits, Span<float> ids, Span<float> weights)
    {
        if (router.Rows != routing.ExpertCount)
            throw new ArgumentException($"{router.Name}: {router.Rows} rows for a routing of {routing.ExpertCount} experts", nameof(router));
        MatMul(router, input, logits, 1);
        RouteExperts(routing, logits, ids, weights, 1);
    }

    /// <summary>
    /// One token's chosen experts' products: <c>outputs[i · outputStride ..] = experts[ids[i]] · inputs[i · inputStride ..]</c>
    /// for every <c>i</c> of <paramref name="ids"/> (expert numbers stored as floats, as <see cref="RouteExperts"/>
    /// leaves them); an <paramref name="inputStride"/> of 0 gives every expert the same input. Results equal
    /// <see cref="MatMulGroup(ReadOnlySpan{WeightMatrix}, ReadOnlySpan{float}, int, Span{float}, int)"/> over the
    /// chosen matrices, which is the default after reading the ids on the host; a GPU reads them on the device (and
    /// leaves the output of an id outside <paramref name="experts"/> untouched, where the default throws).
    /// </summary>
    void MatMulExperts(ReadOnlySpan<WeightMatrix> experts, ReadOnlySpan<float> ids, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
    {
        if (ids.IsEmpty) return;
        ReadToHost(System.Runtime.InteropServices.MemoryMarshal.CreateSpan(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(ids), ids.Length));
        WeightMatrix[] chosen = System.Buffers.ArrayPool<WeightMatrix>.Shared.Rent(ids.Length);
        try
        {
            ExpertRouting.ChooseExperts(experts, ids, chosen);
            MatMulGroup(chosen.AsSpan(0, ids.Length), inputs, inputStride, outputs, outputStride);
        }
        finally
        {
            System.Buffers.ArrayPool<WeightMatrix>.Shared.Return(chosen, clearArray: true);
        }
    }

    /// <summary>
    /// Two sets of experts chosen by the same ids, applied to the same inputs (a MoE layer's gates and ups):
    /// <c>outputs[i · outputStride ..] = first[ids[i]] · inputs[i · inputStride ..]</c> and
    /// <c>outputs[(ids.Length + i) · outputStride ..] = second[ids[i]] · inputs[i · inputStride ..]</c>. Equal to
    /// <see cref="MatMulExperts"/> for each set in turn, which is the default; a GPU may run both sets in one launch.
    /// </summary>
    void MatMulExpertPairs(ReadOnlySpan<WeightMatrix> first, ReadOnlySpan<WeightMatrix> second, ReadOnlySpan<float> ids,
        ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
    {
        MatMulExperts(first, ids, inputs, inputStride, outputs, outputStride);
        MatMulExperts(second, ids, inputs, inputStride, outputs[(ids.Length * outputStride)..], outputStride);
    }

    /// <summary>
    /// <c>destination[..width] = (Σ_i weights[i] × rows[i · width ..]) + destination[..width]</c>: a token's chosen
    /// experts' outputs, weighted, summed in order of <c>i</c> (each product rounded to float, then added, starting from
    /// the first product), and only then added to the destination, as ggml's MUL, ADDs and final ADD do (a MoE layer
    /// passes its shared experts' output as the destination, then adds the result to the residual row). The weights
    /// are where <see cref="RouteExperts"/> left them. The default reads the operands on the host.
    /// </summary>
    void AddWeightedRows(Span<float> destination, ReadOnlySpan<float> rows, ReadOnlySpan<float> weights, int width)
    {
        int count = weights.Length;
        if (count == 0 || width <= 0) return;
        if (destination.Length < width || rows.Length < (long)count * width)
            throw new ArgumentException($"adding {count} weighted rows of {width} needs {count * width} values into {width}");
        Span<float> d = destination[..width];
        ReadToHost(d);
        ReadToHost(System.Runtime.InteropServices.MemoryMarshal.CreateSpan(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(rows), count * width));
        ReadToHost(System.Runtime.InteropServices.MemoryMarshal.CreateSpan(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(weights), count));
        float[] rented = System.Buffers.ArrayPool<float>.Shared.Rent(2 * width);
        try
        {
            Span<float> sum = rented.AsSpan(0, width), product = rented.AsSpan(width, width);
            TensorPrimitives.Multiply(rows[..width], weights[0], sum);
            for (int i = 1; i < count; i++)
            {
                TensorPrimitives.Multiply(rows.Slice(i * width, width), weights[i], product);
                TensorPrimitives.Add(sum, product, sum);
            }
            TensorPrimitives.Add(sum, d, d);
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
        WrittenOnHost(d);
    }

    /// <summary>
    /// <see cref="AddWeightedRows"/> into <paramref name="destination"/>, then <see cref="Add"/> of the result into
    /// <paramref name="residual"/> (<c>width</c> values each): a decoded token's MoE output (its routed experts plus its
    /// shared experts' output) into the residual row, in ggml's order. A backend may do both in one pass over the row;
    /// the default is the two operations.
    /// </summary>
    void AddWeightedRowsToResidual(Span<float> residual, Span<float> destination, ReadOnlySpan<float> rows, ReadOnlySpan<float> weights, int width)
    {
        if (residual.Length < width) throw new ArgumentException($"a residual of {residual.Length} values for rows of {width}", nameof(residual));
        AddWeightedRows(destination, rows, weights, width);
        Add(residual[..width], destination[..width]);
    }

    /// <summary>
    /// A prompt batch's routed experts: for each token <c>t</c> and each of its <paramref name="used"/> chosen experts
    /// <c>e = ids[t · used + k]</c> with weight <c>weights[t · used + k]</c> (as <see cref="RouteExperts"/> leaves them),
    /// the term <c>weight × down[e] · (SiLU(gate[e] · inputs[t]) ⊙ up[e] · inputs[t])</c>; each token's terms are summed in
    /// the routing's order (best first) and the sum is added to <c>residual[t]</c>, as <see cref="AddWeightedRows"/> adds
    /// them (and llama.cpp's graph). <paramref name="work"/> holds
    /// <see cref="ExpertBatch.WorkLength"/> values. The default groups the tokens on the host after reading the choices
    /// back (<see cref="ExpertBatch.AddByExpert"/>); a GPU groups them on the device.
    /// </summary>
    void AddRoutedExperts(ReadOnlySpan<WeightMatrix> gate, ReadOnlySpan<WeightMatrix> up, ReadOnlySpan<WeightMatrix> down,
        ReadOnlySpan<float> ids, ReadOnlySpan<float> weights, int used, ReadOnlySpan<float> inputs, Span<float> residual, int tokens, Span<float> work) =>
        ExpertBatch.AddByExpert(this, gate, up, down, ids, weights, used, inputs, residual, tokens, work);

    /// <summary>Each row of <paramref name="input"/> divided by its root mean square, times <paramref name="weight"/>.</summary>
    void RmsNorm(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int tokens, float epsilon);

    /// <summary>
    /// Two one-row RMSNorms as one operation: <see cref="RmsNorm"/> of <paramref name="firstInput"/> with
    /// <paramref name="firstWeight"/> into <paramref name="firstOutput"/>, and of <paramref name="secondInput"/> with
    /// <paramref name="secondWeight"/> into <paramref name="secondOutput"/> (each row as long as its weight). MLA's
    /// query and latent norms after their one product are such a pair; a backend may launch both at once. The default
    /// is the two norms in that order.
    /// </summary>
    void RmsNormPair(ReadOnlySpan<float> firstInput, ReadOnlySpan<float> firstWeight, Span<float> firstOutput,
        ReadOnlySpan<float> secondInput, ReadOnlySpan<float> secondWeight, Span<float> secondOutput, float epsilon)
    {
        RmsNorm(firstInput, firstWeight, firstOutput, 1, epsilon);
        RmsNorm(secondInput, secondWeight, secondOutput, 1, epsilon);
    }

    /// <summary>
    /// Rotates <paramref name="heads"/> head slices of every token row: head <c>h</c> of token <c>t</c> starts at
    /// <c>t * rowStride + h * headStride + offset</c> and is at position <c>firstPosition + t</c>.
    /// </summary>
    void Rope(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition);

    /// <summary><c>gate = silu(gate) * up</c>, element-wise (the SwiGLU feed-forward's activation).</summary>
    void SiluMul(Span<float> gate, ReadOnlySpan<float> up);

    /// <summary>
    /// Causal attention of <paramref name="tokens"/> queries at positions <c>firstPosition..</c> over the cached
    /// keys/values of positions <c>0..position</c> (the new tokens' rows must already be in the cache).
    /// <paramref name="queries"/> holds <c>Heads × KeyDim</c> per token; <paramref name="output"/> <c>Heads × ValueDim</c>.
    /// </summary>
    void Attention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens);

    /// <summary>
    /// Hands the backend a pinned buffer (<c>GC.AllocateArray(pinned: true)</c>) that forward passes keep
    /// activations, caches or constants in, for as long as the buffer lives. From then on the backend may hold the
    /// buffer's contents in its own memory (a GPU keeps them on the device): operations given spans inside it read
    /// and write that copy, the host reads it only after <see cref="ReadToHost"/> and changes it only followed by
    /// <see cref="WrittenOnHost"/>. The contents at the call are the starting contents. The CPU needs none of this.
    /// </summary>
    void Attach(float[] buffer) { }

    /// <summary>
    /// A forward pass of <paramref name="tokens"/> rows, at positions before <paramref name="endPosition"/>, begins.
    /// <paramref name="replayable"/> says nothing in it waits for results on the host (no <see cref="ReadToHost"/>)
    /// before <see cref="EndForward"/>, so a GPU backend may record its operations and run them as one graph.
    /// </summary>
    void BeginForward(int tokens, int endPosition, bool replayable) { }

    /// <summary>
    /// The part of the pass that <see cref="BeginForward"/> opened ends (<paramref name="completed"/> false: it failed,
    /// and recorded work is dropped). Operations after it run as usual. Returns false when none of
    /// the pass's operations ran and the caller must run the pass again, from <see cref="BeginForward"/> on: a backend
    /// replaying a recorded pass takes the operations in without running them, and finds only at the end that they
    /// were not the recorded ones. A backend answers false at most once in a row.
    /// </summary>
    bool EndForward(bool completed) => true;

    /// <summary>
    /// <see cref="BeginForward(int, int, bool)"/> told also what decides the pass's operations (<paramref name="key"/>;
    /// its default: not known) and the pass's token ids. A backend that verified earlier that a pass of this key issues
    /// exactly the operations of one of its recordings, and whose own buffers and settings have not changed since, may
    /// run that recording for <paramref name="tokenIds"/> at the positions before <paramref name="endPosition"/>
    /// itself and return true: the caller then runs neither the pass nor <see cref="EndForward"/> (bookkeeping of its
    /// own, such as the session's position, stays the caller's). Otherwise it is <see cref="BeginForward(int, int, bool)"/>,
    /// and false, which the default always is.
    /// </summary>
    bool BeginForward(int tokens, int endPosition, bool replayable, in ForwardKey key, ReadOnlySpan<int> tokenIds)
    {
        BeginForward(tokens, endPosition, replayable);
        return false;
    }

    /// <summary>
    /// Whether an operation writing <paramref name="values"/> copies them back to the host before it returns (a GPU:
    /// they lie outside every attached buffer), which a pass that is to be recorded may not do. The default: false.
    /// </summary>
    bool StagesOutput(ReadOnlySpan<float> values) => false;

    /// <summary>Makes <paramref name="values"/> (part of an attached buffer) current on the host, for the host to read.</summary>
    void ReadToHost(Span<float> values) { }

    /// <summary>Tells the backend the host has written <paramref name="values"/> (part of an attached buffer).</summary>
    void WrittenOnHost(ReadOnlySpan<float> values) { }

    /// <summary>
    /// The operations from here to <see cref="EndConcurrentBranch"/> form a branch that may run alongside the operations
    /// issued after it, up to <see cref="JoinConcurrentBranch"/> (a GPU: on a second stream, as parallel branches of a
    /// recorded step). The caller promises that the branch reads only values written before it began or within it, and
    /// that the operations between its end and the join neither read nor write what the branch writes. Each operation
    /// computes exactly what it would in order. The default runs everything in issue order, which meets that contract.
    /// </summary>
    void BeginConcurrentBranch() { }

    /// <summary>Ends the branch <see cref="BeginConcurrentBranch"/> began: what follows runs beside it.</summary>
    void EndConcurrentBranch() { }

    /// <summary>What follows waits for the branch: its outputs may be read from here on.</summary>
    void JoinConcurrentBranch() { }

    /// <summary>
    /// Sets <paramref name="values"/> to zero where the backend keeps them: an accumulator that a pass's operations add
    /// into. The default clears the host copy and tells the backend (<see cref="WrittenOnHost"/>); a GPU backend clears
    /// its own copy on its stream, without the host's memory traffic or a wait.
    /// </summary>
    void Clear(Span<float> values)
    {
        values.Clear();
        WrittenOnHost(values);
    }

    /// <summary>Row <c>t</c> of <paramref name="output"/> = row <c>tokens[t]</c> of <paramref name="table"/>, dequantized (the token embedding).</summary>
    void Embed(WeightMatrix table, ReadOnlySpan<int> tokens, Span<float> output)
    {
        int width = table.Columns;
        for (int t = 0; t < tokens.Length; t++) table.DequantizeRow(tokens[t], output.Slice(t * width, width));
    }

    /// <summary><c>x += y</c>, element-wise over <paramref name="x"/> (the residual connection).</summary>
    void Add(Span<float> x, ReadOnlySpan<float> y) => TensorPrimitives.Add(x, y[..x.Length], x);

    /// <summary>Adds <paramref name="bias"/> to each of the first <paramref name="tokens"/> rows of <paramref name="rows"/>.</summary>
    void AddBias(Span<float> rows, ReadOnlySpan<float> bias, int tokens)
    {
        for (int t = 0; t < tokens; t++)
        {
            Span<float> r = rows.Slice(t * bias.Length, bias.Length);
            TensorPrimitives.Add(r, bias, r);
        }
    }

    /// <summary>
    /// <see cref="AddBias"/> of <paramref name="queryBias"/>, <paramref name="keyBias"/> and <paramref name="valueBias"/>
    /// (an empty one: none) to the first <paramref name="tokens"/> rows of <paramref name="q"/>, <paramref name="k"/> and
    /// <paramref name="v"/>, in that order: the attention's projections of a batch. A backend may add them in one pass.
    /// </summary>
    void AddQkvBiases(Span<float> q, ReadOnlySpan<float> queryBias, Span<float> k, ReadOnlySpan<float> keyBias, Span<float> v,
        ReadOnlySpan<float> valueBias, int tokens)
    {
        if (!queryBias.IsEmpty) AddBias(q, queryBias, tokens);
        if (!keyBias.IsEmpty) AddBias(k, keyBias, tokens);
        if (!valueBias.IsEmpty) AddBias(v, valueBias, tokens);
    }

    /// <summary>
    /// Copies <paramref name="rows"/> rows of <paramref name="width"/> values: row <c>i</c> starts at
    /// <c>i * sourceStride</c> in <paramref name="source"/> and goes to <c>i * destinationStride</c> in
    /// <paramref name="destination"/>. The two must not overlap.
    /// </summary>
    void CopyRows(ReadOnlySpan<float> source, int sourceStride, Span<float> destination, int destinationStride, int rows, int width)
    {
        for (int i = 0; i < rows; i++)
            source.Slice(i * sourceStride, width).CopyTo(destination.Slice(i * destinationStride, width));
    }

    /// <summary>
    /// <see cref="CopyRows"/> into rows <c>firstRow..</c> of <paramref name="destination"/> (row <c>r</c> at
    /// <c>r * destinationStride</c>): the key/value cache writes of the tokens at positions <c>firstRow..</c>. The row
    /// is given apart from the span so that a backend replaying recorded passes can take it as one of the step's
    /// varying values rather than as a different destination.
    /// </summary>
    void StoreRows(ReadOnlySpan<float> source, int sourceStride, Span<float> destination, int destinationStride, int firstRow, int rows, int width)
    {
        if (rows <= 0 || width <= 0) return;
        long start = (long)firstRow * destinationStride;
        if (firstRow < 0 || start > destination.Length) throw new ArgumentOutOfRangeException(nameof(firstRow), $"row {firstRow} of stride {destinationStride} is outside the destination's {destination.Length} values");
        CopyRows(source, sourceStride, destination[(int)start..], destinationStride, rows, width);
    }

    /// <summary>
    /// <see cref="Rope"/>, then <see cref="StoreRows"/> of each rotated token row's <paramref name="storeWidth"/> values
    /// from <paramref name="storeOffset"/> into rows <c>firstPosition..</c> of <paramref name="destination"/>: the key
    /// cache write of freshly rotated keys, which a GPU does in the rotation's own kernel.
    /// </summary>
    void RopeStore(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition,
        int storeOffset, int storeWidth, Span<float> destination, int destinationStride)
    {
        Rope(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition);
        StoreRows(values[storeOffset..], rowStride, destination, destinationStride, firstPosition, tokens, storeWidth);
    }

    /// <summary>
    /// <see cref="RopeStore"/>, then <see cref="StoreRows"/> of the tokens' rows of <paramref name="rowSource"/>
    /// (<paramref name="rowWidth"/> values, <paramref name="rowSourceStride"/> apart) into rows <c>firstPosition..</c> of
    /// <paramref name="rowDestination"/>: a layer's whole cache write with the rotation (the rotated keys, and the values
    /// or MLA's normalized latent), which a GPU does in the rotation's own kernel.
    /// </summary>
    void RopeStoreWithRows(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition,
        int storeOffset, int storeWidth, Span<float> destination, int destinationStride,
        ReadOnlySpan<float> rowSource, int rowSourceStride, Span<float> rowDestination, int rowDestinationStride, int rowWidth)
    {
        RopeStore(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition, storeOffset, storeWidth, destination, destinationStride);
        StoreRows(rowSource, rowSourceStride, rowDestination, rowDestinationStride, firstPosition, tokens, rowWidth);
    }

    /// <summary>
    /// MLA's rotations and cache writes of one pass: <see cref="Rope"/> of the queries (<paramref name="queryHeads"/>
    /// heads per token row of <paramref name="queryRowStride"/>, <paramref name="queryHeadStride"/> apart, rotated
    /// slices at <paramref name="queryOffset"/>), then <see cref="CopyRows"/> of every (token, head) pair's rotated
    /// slice to its row of <paramref name="rotatedQueries"/> (row <c>token · queryHeads + head</c>,
    /// <paramref name="rotatedStride"/> apart), then <see cref="RopeStoreWithRows"/> with the other arguments (the
    /// shared key, its cache row and the normalized latent's). A GPU does it all in one launch; the default is the three
    /// operations.
    /// </summary>
    void RopeQueriesThenStoreWithRows(Rope rope, Span<float> queries, int queryHeads, int queryRowStride, int queryHeadStride, int queryOffset,
        Span<float> rotatedQueries, int rotatedStride,
        Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition,
        int storeOffset, int storeWidth, Span<float> destination, int destinationStride,
        ReadOnlySpan<float> rowSource, int rowSourceStride, Span<float> rowDestination, int rowDestinationStride, int rowWidth)
    {
        Rope(rope, queries, tokens, queryHeads, queryRowStride, queryHeadStride, queryOffset, firstPosition);
        if (tokens > 0 && queryHeads > 0)
            CopyRows(queries[queryOffset..], queryHeadStride, rotatedQueries, rotatedStride, tokens * queryHeads, rope.Dimensions);
        RopeStoreWithRows(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition, storeOffset, storeWidth, destination, destinationStride,
            rowSource, rowSourceStride, rowDestination, rowDestinationStride, rowWidth);
    }

    /// <summary>
    /// Row <c>i</c> of <paramref name="destination"/> = row <c>rows[i]</c> of <paramref name="source"/>, rows of
    /// <paramref name="width"/> values. <paramref name="rows"/> is host data, read during the call.
    /// </summary>
    void GatherRows(ReadOnlySpan<float> source, ReadOnlySpan<int> rows, Span<float> destination, int width)
    {
        for (int i = 0; i < rows.Length; i++)
            source.Slice(rows[i] * width, width).CopyTo(destination.Slice(i * width, width));
    }

    /// <summary>
    /// Row <c>rows[i]</c> of <paramref name="destination"/> += <c>scales[i]</c> × row <c>i</c> of <paramref name="source"/>,
    /// in order of <c>i</c> (a mixture-of-experts output weighted into the residual stream). <paramref name="rows"/>
    /// and <paramref name="scales"/> are host data, read during the call.
    /// </summary>
    void AddScaledRows(Span<float> destination, ReadOnlySpan<float> source, ReadOnlySpan<int> rows, ReadOnlySpan<float> scales, int width)
    {
        for (int i = 0; i < rows.Length; i++)
        {
            Span<float> d = destination.Slice(rows[i] * width, width);
            TensorPrimitives.MultiplyAdd(source.Slice(i * width, width), scales[i], d, d);
        }
    }
}

/// <summary>
/// Head layout of one attention: query head <c>h</c> reads cache head <c>h / (Heads / KvHeads)</c>; keys of
/// <see cref="KeyDim"/> and values of <see cref="ValueDim"/> per cache head; scores are multiplied by <see cref="Scale"/>.
/// </summary>
public readonly record struct AttentionShape(int Heads, int KvHeads, int KeyDim, int ValueDim, float Scale)
{
    public void Validate(KvLayerCache cache)
    {
        if (Heads <= 0 || KvHeads <= 0 || Heads % KvHeads != 0)
            throw new InvalidOperationException($"{Heads} query heads cannot share {KvHeads} key/value heads");
        if ((long)KvHeads * KeyDim > cache.KeyWidth || (long)KvHeads * ValueDim > cache.ValueWidth)
            throw new InvalidOperationException("attention heads do not fit the cache rows");
    }
}
