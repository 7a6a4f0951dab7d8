"""fairseq-train flags shared by `make demo`, the studies and the benchmarks: the small WikiText-2 language models
(one context model, 2 pre-norm layers, 256 wide, with a DeFINE input, the same Map without a unit, or fairseq's
adaptive input, each with an adaptive softmax tied to the input: cutoffs 5000,20000, factor 4) and the
small translation context."""

SMALL_LM_CONTEXT = [
    "--decoder-layers", "2", "--decoder-embed-dim", "256", "--decoder-ffn-embed-dim", "1024",
    "--decoder-attention-heads", "4", "--decoder-normalize-before", "--tokens-per-sample", "128", "--dropout", "0.1",
]
TIED_ADAPTIVE = [
    "--adaptive-input", "--adaptive-input-cutoff", "5000,20000", "--adaptive-softmax-cutoff", "5000,20000",
    "--tie-adaptive-weights", "--tie-adaptive-proj",
]


# `make demo`'s model: a 64-wide adaptive Map projected to the context's 256 with the default unit (no --define-*
# unit flag: the Transformer LM's default preset, recommended: the WikiText-2 study's `authors-64-fan-in` row); its
# control, the same Map without a unit (`map-64`).
SMALL_MAP = ["--arch", "define_transformer_lm", *SMALL_LM_CONTEXT, *TIED_ADAPTIVE, "--define-map-dim", "64",
             "--define-input-dim", "256"]
SMALL_DEFINE_LM = SMALL_MAP
SMALL_CONTROL_LM = [*SMALL_MAP, "--define-transform", "none"]
# A named stock arch resized to the same context (the bare `transformer_lm` skips base_lm_architecture and keeps
# decoder_input_dim = 512, which breaks tied adaptive weights at 256 wide); transformer_lm_big only sets sizes.
SMALL_ADAPTIVE_LM = ["--arch", "transformer_lm_big", *SMALL_LM_CONTEXT, *TIED_ADAPTIVE]

# adaptive_loss refuses pytorch DDP even for one process (fairseq's check); legacy_ddp is equivalent here.
ADAPTIVE_LOSS = ["--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp"]

# Translation (Multi30k-sized): one context model, 3+3 layers, 256 wide; embeddings shared across languages.
SMALL_MT_CONTEXT = [
    "--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "256", "--decoder-embed-dim", "256",
    "--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim", "1024",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
]
