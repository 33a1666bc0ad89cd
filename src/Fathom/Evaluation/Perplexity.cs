using System.Diagnostics;
using Fathom.Generation;
using Fathom.Models;
using Fathom.Runtime;

namespace Fathom.Evaluation;

/// <summary>
/// Perplexity of a model on a text, computed the way llama.cpp's <c>llama-perplexity</c> does, so the numbers
/// compare: the whole text is tokenized once (BOS as the model's metadata says) and cut into chunks of
/// <c>C</c> tokens; each chunk runs from an empty cache with its first token replaced by BOS when the model adds
/// BOS; only the second half is scored (positions <c>C/2</c> to <c>C − 2</c>, each predicting the next token),
/// so every scored token has at least <c>C/2</c> tokens of context; <c>PPL = exp(mean NLL)</c> with the NLL from a
/// double log-softmax. Memory is one chunk's worth whatever the text's length.
/// </summary>
public static class Perplexity
{
    /// <summary>Tokenizes <paramref name="text"/> as llama-perplexity does (special tokens added, not parsed) and evaluates it.</summary>
    public static PerplexityResult Evaluate(LoadedModel model, string text, PerplexityOptions options, Action<PerplexityProgress>? progress = null)
    {
        IReadOnlyList<int> tokens = model.Tokenizer.Encode(text, addSpecial: true, parseSpecial: false);
        int? bos = model.Tokenizer.Model.AddBos ? model.Tokenizer.BosId : null;
        return Evaluate(model.Model, tokens, bos, options, progress);
    }

    /// <summary>
    /// Evaluates a tokenized text. <paramref name="chunkStartToken"/> replaces the first token of every chunk
    /// (BOS for models that add one; null keeps the text's own token).
    /// </summary>
    public static PerplexityResult Evaluate(Model model, IReadOnlyList<int> tokens, int? chunkStartToken, PerplexityOptions options,
        Action<PerplexityProgress>? progress = null)
    {
        options.Validate();
        int context = options.ContextSize;
        if (context > model.Config.ContextLength)
            throw new ArgumentException($"a context of {context} tokens is more than the model's {model.Config.ContextLength}");
        if (tokens.Count < 2L * context)
            throw new ArgumentException($"the text is {tokens.Count} tokens; perplexity with a context of {context} needs at least {2L * context}");
        int chunks = tokens.Count / context;
        if (options.MaxChunks is int max) chunks = Math.Min(chunks, max);

        int vocab = model.VocabSize;
        int first = context / 2;
        int scored = LogProbabilityFile.ScoredPerChunk(context);
        int batch = Math.Min(options.BatchSize, scored);
        int[] chunkTokens = new int[chunks * context];
        for (int i = 0; i < chunkTokens.Length; i++) chunkTokens[i] = tokens[i];

        LogProbabilityFile.Reader? baseFile = null;
        LogProbabilityFile.Writer? saveFile = null;
        try
        {
            if (options.KlDivergenceBasePath is string basePath)
            {
                baseFile = LogProbabilityFile.Open(basePath);
                CheckBaseMatches(baseFile.Header, vocab, context, chunkTokens);
            }
            if (options.SaveLogProbabilitiesPath is string savePath)
                saveFile = LogProbabilityFile.Create(savePath, vocab, context, chunkTokens);

            InferenceSession session = model.CreateSession(context);
            int[] head = new int[first];
            float[] logits = GC.AllocateUninitializedArray<float>(batch * vocab);
            float[] logProbabilities = GC.AllocateUninitializedArray<float>(vocab);
            float[] baseRow = baseFile is null ? [] : GC.AllocateUninitializedArray<float>(vocab);
            var kl = baseFile is null ? null : new KlDivergenceStatistics();
            var running = new List<double>(chunks);
            double nll = 0, nllSquares = 0;
            long count = 0;
            var clock = Stopwatch.StartNew();

            for (int c = 0; c < chunks; c++)
            {
                ReadOnlySpan<int> chunk = chunkTokens.AsSpan(c * context, context);
                session.Reset();
                // The unscored first half only builds the cache: one logits row, thrown away.
                chunk[..first].CopyTo(head);
                if (chunkStartToken is int start) head[0] = start;
                model.Forward(session, head, logits.AsSpan(0, vocab));

                // Rows first .. C−2 predict tokens first+1 .. C−1; the last token is never fed (nothing scores its row).
                for (int from = first; from < context - 1; from += batch)
                {
                    int n = Math.Min(batch, context - 1 - from);
                    model.Forward(session, chunk.Slice(from, n), logits.AsSpan(0, n * vocab), allPositions: true);
                    for (int r = 0; r < n; r++)
                    {
                        ReadOnlySpan<float> row = logits.AsSpan(r * vocab, vocab);
                        int actual = chunk[from + r + 1];
                        double tokenNll = saveFile is null && kl is null
                            ? LogSoftmax.LogSumExp(row, logProbabilities) - row[actual]
                            : LogSoftmax.Compute(row, logProbabilities) - row[actual];
                        nll += tokenNll;
                        nllSquares += tokenNll * tokenNll;
                        count++;
                        saveFile?.WriteRow(logProbabilities);
                        if (kl is not null)
                        {
                            baseFile!.ReadRow(baseRow);
                            kl.Add(baseRow, logProbabilities, actual);
                        }
                    }
                }
                running.Add(Math.Exp(nll / count));
                progress?.Invoke(new PerplexityProgress(c + 1, chunks, running[^1], clock.Elapsed));
            }

            double mean = nll / count;
            double ppl = Math.Exp(mean);
            return new PerplexityResult
            {
                ContextSize = context,
                ChunkCount = chunks,
                ScoredTokens = checked((int)count),
                MeanNegativeLogLikelihood = mean,
                Perplexity = ppl,
                PerplexityError = ppl * KlDivergenceStatistics.StandardError(mean, nllSquares / count, (int)count),
                ChunkPerplexities = running,
                KlDivergence = kl?.Summarize(),
                Elapsed = clock.Elapsed,
            };
        }
        catch when (saveFile is not null)
        {
            // A half-written file would pass for a short run's; leave none.
            saveFile.Dispose();
            File.Delete(options.SaveLogProbabilitiesPath!);
            throw;
        }
        finally
        {
            saveFile?.Dispose();
            baseFile?.Dispose();
        }
    }

    private static void CheckBaseMatches(LogProbabilityFile.Header header, int vocab, int context, ReadOnlySpan<int> tokens)
    {
        if (header.VocabSize != vocab)
            throw new InvalidDataException($"the base log-probabilities have a vocabulary of {header.VocabSize}, the model {vocab}");
        if (header.ContextSize != context)
            throw new InvalidDataException($"the base log-probabilities were computed with a context of {header.ContextSize}, not {context}");
        int common = Math.Min(header.Tokens.Length, tokens.Length);
        if (!header.Tokens.AsSpan(0, common).SequenceEqual(tokens[..common]))
            throw new InvalidDataException("the base log-probabilities were computed over different tokens (another text or tokenizer)");
        if (header.Tokens.Length < tokens.Length)
            throw new InvalidDataException($"the base log-probabilities cover {header.ChunkCount} chunks, fewer than the {tokens.Length / context} to evaluate; evaluate at most {header.ChunkCount}");
    }
}
