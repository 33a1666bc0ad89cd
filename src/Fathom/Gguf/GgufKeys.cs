namespace Fathom.Gguf;

/// <summary>
/// Metadata key names as llama.cpp writes and reads them (<c>llama-arch.cpp</c>'s LLM_KV_NAMES and gguf-py's
/// <c>Keys</c>). Architecture-specific keys are built from the architecture name, e.g.
/// <c>GgufKeys.Arch.BlockCount("deepseek2")</c> is <c>deepseek2.block_count</c>.
/// </summary>
public static class GgufKeys
{
    public static class General
    {
        public const string Architecture = "general.architecture";
        public const string QuantizationVersion = "general.quantization_version";
        public const string Alignment = "general.alignment";
        public const string FileType = "general.file_type";
        public const string Name = "general.name";
        public const string Author = "general.author";
        public const string Version = "general.version";
        public const string Organization = "general.organization";
        public const string BaseName = "general.basename";
        public const string Finetune = "general.finetune";
        public const string Description = "general.description";
        public const string SizeLabel = "general.size_label";
        public const string License = "general.license";
        public const string Url = "general.url";
        public const string SourceUrl = "general.source.url";
        public const string SourceHuggingFaceRepository = "general.source.huggingface.repository";
    }

    public static class Tokenizer
    {
        public const string Model = "tokenizer.ggml.model";
        public const string Pre = "tokenizer.ggml.pre";
        public const string Tokens = "tokenizer.ggml.tokens";
        public const string TokenType = "tokenizer.ggml.token_type";
        public const string TokenTypeCount = "tokenizer.ggml.token_type_count";
        public const string Scores = "tokenizer.ggml.scores";
        public const string Merges = "tokenizer.ggml.merges";
        public const string BosTokenId = "tokenizer.ggml.bos_token_id";
        public const string EosTokenId = "tokenizer.ggml.eos_token_id";
        public const string EotTokenId = "tokenizer.ggml.eot_token_id";
        public const string EomTokenId = "tokenizer.ggml.eom_token_id";
        public const string UnknownTokenId = "tokenizer.ggml.unknown_token_id";
        public const string SeparatorTokenId = "tokenizer.ggml.seperator_token_id"; // sic: llama.cpp's spelling
        public const string PaddingTokenId = "tokenizer.ggml.padding_token_id";
        public const string AddBosToken = "tokenizer.ggml.add_bos_token";
        public const string AddEosToken = "tokenizer.ggml.add_eos_token";
        public const string AddSpacePrefix = "tokenizer.ggml.add_space_prefix";
        public const string RemoveExtraWhitespaces = "tokenizer.ggml.remove_extra_whitespaces";
        public const string ChatTemplate = "tokenizer.chat_template";
        public const string HuggingFaceJson = "tokenizer.huggingface.json";

        /// <summary>A named chat template: <c>tokenizer.chat_template.NAME</c>.</summary>
        public static string NamedChatTemplate(string name) => $"{ChatTemplate}.{name}";
    }

    /// <summary>Keys that join the parts of a split model (llama.cpp's gguf-split).</summary>
    public static class Split
    {
        /// <summary>0-based index of this part (UInt16).</summary>
        public const string Number = "split.no";

        /// <summary>Number of parts (UInt16).</summary>
        public const string Count = "split.count";

        /// <summary>Tensors in all parts together (Int32).</summary>
        public const string TensorsCount = "split.tensors.count";
    }

    /// <summary>Keys named <c>{arch}.…</c>.</summary>
    public static class Arch
    {
        public static string VocabSize(string arch) => $"{arch}.vocab_size";
        public static string ContextLength(string arch) => $"{arch}.context_length";
        public static string EmbeddingLength(string arch) => $"{arch}.embedding_length";
        public static string BlockCount(string arch) => $"{arch}.block_count";
        public static string LeadingDenseBlockCount(string arch) => $"{arch}.leading_dense_block_count";
        public static string FeedForwardLength(string arch) => $"{arch}.feed_forward_length";
        public static string ExpertFeedForwardLength(string arch) => $"{arch}.expert_feed_forward_length";
        public static string ExpertSharedFeedForwardLength(string arch) => $"{arch}.expert_shared_feed_forward_length";
        public static string UseParallelResidual(string arch) => $"{arch}.use_parallel_residual";
        public static string TensorDataLayout(string arch) => $"{arch}.tensor_data_layout";
        public static string ExpertCount(string arch) => $"{arch}.expert_count";
        public static string ExpertUsedCount(string arch) => $"{arch}.expert_used_count";
        public static string ExpertSharedCount(string arch) => $"{arch}.expert_shared_count";
        public static string ExpertGroupCount(string arch) => $"{arch}.expert_group_count";
        public static string ExpertGroupUsedCount(string arch) => $"{arch}.expert_group_used_count";
        public static string ExpertWeightsScale(string arch) => $"{arch}.expert_weights_scale";
        public static string ExpertWeightsNorm(string arch) => $"{arch}.expert_weights_norm";
        public static string ExpertGatingFunc(string arch) => $"{arch}.expert_gating_func";
        public static string NextNPredictLayers(string arch) => $"{arch}.nextn_predict_layers";

        public static string AttentionHeadCount(string arch) => $"{arch}.attention.head_count";
        public static string AttentionHeadCountKv(string arch) => $"{arch}.attention.head_count_kv";
        public static string AttentionMaxAlibiBias(string arch) => $"{arch}.attention.max_alibi_bias";
        public static string AttentionClampKqv(string arch) => $"{arch}.attention.clamp_kqv";
        public static string AttentionKeyLength(string arch) => $"{arch}.attention.key_length";
        public static string AttentionValueLength(string arch) => $"{arch}.attention.value_length";
        public static string AttentionKeyLengthMla(string arch) => $"{arch}.attention.key_length_mla";
        public static string AttentionValueLengthMla(string arch) => $"{arch}.attention.value_length_mla";
        public static string AttentionLayerNormEpsilon(string arch) => $"{arch}.attention.layer_norm_epsilon";
        public static string AttentionLayerNormRmsEpsilon(string arch) => $"{arch}.attention.layer_norm_rms_epsilon";
        public static string AttentionCausal(string arch) => $"{arch}.attention.causal";
        public static string AttentionQLoraRank(string arch) => $"{arch}.attention.q_lora_rank";
        public static string AttentionKvLoraRank(string arch) => $"{arch}.attention.kv_lora_rank";
        public static string AttentionSlidingWindow(string arch) => $"{arch}.attention.sliding_window";
        public static string AttentionScale(string arch) => $"{arch}.attention.scale";

        public static string RopeDimensionCount(string arch) => $"{arch}.rope.dimension_count";
        public static string RopeFreqBase(string arch) => $"{arch}.rope.freq_base";
        public static string RopeScaleLinear(string arch) => $"{arch}.rope.scale_linear";
        public static string RopeScalingType(string arch) => $"{arch}.rope.scaling.type";
        public static string RopeScalingFactor(string arch) => $"{arch}.rope.scaling.factor";
        public static string RopeScalingAttnFactor(string arch) => $"{arch}.rope.scaling.attn_factor";
        public static string RopeScalingOriginalContextLength(string arch) => $"{arch}.rope.scaling.original_context_length";
        public static string RopeScalingFinetuned(string arch) => $"{arch}.rope.scaling.finetuned";
        public static string RopeScalingYarnLogMultiplier(string arch) => $"{arch}.rope.scaling.yarn_log_multiplier";
    }
}
