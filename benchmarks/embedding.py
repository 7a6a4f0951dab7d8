"""Embedding benchmark on real WikiText-2 batches: DeFINE vs adaptive input vs a plain embedding table.

    python -m benchmarks embedding --data ../shared/data/wikitext-2 --json bench-results/embedding.json

Batches: 16 random blocks of 512 contiguous training tokens (8,192 tokens); the vocabulary is built from the
training file in frequency order, as fairseq's dictionary does. Forward + backward of (a) DefineEmbedding,
(b) the same with dedupe off, (c) a reference DeFINE written the way the authors' public code runs it (GLTs that
transpose in and out of every layer, chunk-wise concatenation for the mixer, no dedupe), (d) the same Map without
the unit (`transform="none"`: the n-wide table projected to 512, the equal-n control), (e) fairseq's AdaptiveInput
(dim 512, cutoffs 5000,20000, factor 4), (f) nn.Embedding(V, 512); and inference-mode forward of (g) DefineEmbedding
with its inference table (after prepare_for_inference) and (h) nn.Embedding; and one decoding step (64 ids, e.g.
beam 5 x 12 sentences plus padding) of (i) DefineEmbedding with its table, which checks the parameters' version
counters on every lookup so that it is never stale, against (j) a bare `F.embedding` on the same table: the cost
of the check.
"""

import copy
import os
from collections import Counter
from dataclasses import replace

import torch
import torch.nn.functional as F

from benchmarks.glt import reference_glt
from benchmarks.timing import meta, print_table, time_interleaved
from fairseq_define.modules.define_embedding import DefineEmbedding

PAD = 1  # fairseq's dictionary: <s>=0, <pad>=1, </s>=2, <unk>=3


def add_arguments(parser):
    parser.add_argument("--data", default="../shared/data/wikitext-2", help="folder with wiki.train.tokens")
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--batches", type=int, default=8, help="distinct random batches, cycled over rounds")
    parser.add_argument("--embed-dim", type=int, default=512)
    parser.add_argument("--map-dim", type=int, default=128)
    parser.add_argument("--expand-dim", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--max-groups", type=int, default=4)


def load_wikitext_ids(data_dir: str):
    """Token ids of wiki.train.tokens (an end-of-sentence after each line) and the vocabulary size."""
    path = os.path.join(data_dir, "wiki.train.tokens")
    if not os.path.isfile(path):
        raise SystemExit(f"WikiText-2 not found: {path} (pass --data DIR; see ../shared/data/README.md)")
    with open(path, encoding="utf-8") as f:
        lines = [line.split() + ["</s>"] for line in f]
    counts = Counter(word for line in lines for word in line)
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = specials + [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in specials]
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.tensor([index[w] for line in lines for w in line], dtype=torch.long)
    return ids, len(vocab)


def reference_define(emb: DefineEmbedding, tokens: torch.Tensor) -> torch.Tensor:
    """DeFINE as the authors' code computes it: every GLT in row-major layout (view -> transpose -> bmm -> + bias
    -> transpose -> contiguous), per-group LayerNorm through a view, and the mixer as a concatenation of
    interleaved chunks; the unit runs on every position. Uses `emb`'s parameters, so the outputs must agree."""
    unit = emb.unit
    e = emb.map(tokens).reshape(-1, emb.input_dim)
    h = None
    for layer, (spec, glt, norm) in enumerate(zip(unit.specs, unit.layers, unit.norms)):
        g = spec.groups
        if layer == 0:
            x = e
        else:
            pieces = []
            for e_chunk, h_chunk in zip(e.chunk(g, dim=1), h.chunk(g, dim=1)):
                pieces += [e_chunk, h_chunk]
            x = torch.cat(pieces, dim=1)
        h = reference_glt(x, glt.weight, glt.bias, g)
        rows = h.shape[0]
        h = norm(h.view(rows, g, -1)).view(rows, -1)
        h = unit.dropout(unit.activation(h))
    out = unit.reduce(h) * unit.output_scale
    out = out.masked_fill(tokens.reshape(-1, 1) == emb.padding_idx, 0.0)
    return out.view(*tokens.shape, -1)


def run(args, device, dtype):
    ids, vocab = load_wikitext_ids(args.data)
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.batches):
        starts = torch.randint(0, len(ids) - args.block_size, (args.blocks,), generator=generator)
        batches.append(torch.stack([ids[s:s + args.block_size] for s in starts.tolist()]).to(device))
    unique_per_batch = sum(b.unique().numel() for b in batches) / len(batches)

    torch.manual_seed(0)
    define_args = dict(map_dim=args.map_dim, expand_dim=args.expand_dim, depth=args.depth,
                       max_groups=args.max_groups, embedding_dim=args.embed_dim)
    define = DefineEmbedding(vocab, PAD, **define_args).to(device, dtype)
    define_no_dedupe, reference, define_eval = (copy.deepcopy(define) for _ in range(3))
    define_no_dedupe.config = replace(define.config, dedupe=False)
    none = DefineEmbedding(vocab, PAD, **dict(define_args, transform="none")).to(device, dtype)
    define_eval.prepare_for_inference()
    define_eval.eval()
    from fairseq.modules import AdaptiveInput

    adaptive = AdaptiveInput(vocab, PAD, args.embed_dim, 4.0, args.embed_dim, [5000, 20000, vocab], 0, 8)
    adaptive = adaptive.to(device, dtype)
    embedding = torch.nn.Embedding(vocab, args.embed_dim, padding_idx=PAD).to(device, dtype)

    with torch.no_grad():  # the reference must compute the same function
        torch.testing.assert_close(reference_define(reference, batches[0]), define(batches[0]), atol=1e-3, rtol=1e-3)

    grad = torch.randn(args.blocks, args.block_size, args.embed_dim, device=device, dtype=dtype)
    state = {"step": 0}

    def batch():
        return batches[state["step"] % len(batches)]

    def train_step(module, fn=None):
        def step():
            out = fn(module, batch()) if fn else module(batch())
            out.backward(grad)
        return step

    def eval_step(module):
        def step():
            with torch.no_grad():
                module(batch())
        return step

    train = {
        "define": train_step(define),
        "define_no_dedupe": train_step(define_no_dedupe),
        "reference_define": train_step(reference, reference_define),
        "map_only": train_step(none),
        "adaptive_input": train_step(adaptive),
        "embedding": train_step(embedding),
    }
    evaluate = {"define_cached_eval": eval_step(define_eval), "embedding_eval": eval_step(embedding)}
    step_ids = batches[0][:, :4].reshape(-1, 1)  # [64, 1]: one incremental decoding step
    with torch.no_grad():
        define_eval(step_ids)  # builds the table
        table = define_eval.inference_table()

    def decoding_step(fn):
        def step():
            with torch.no_grad():
                fn(step_ids)
        return step

    evaluate.update(define_cached_step=decoding_step(define_eval),
                    bare_table_step=decoding_step(lambda ids: F.embedding(ids, table)))

    def advance():
        state["step"] += 1

    ms = {}
    for group in (train, evaluate):
        group = dict(group, _advance=advance)
        timed = time_interleaved(group, device, rounds=args.rounds)
        timed.pop("_advance")
        ms.update(timed)
    params = {name: sum(p.numel() for p in module.parameters()) for name, module in
              [("define", define), ("define_no_dedupe", define_no_dedupe), ("reference_define", reference),
               ("map_only", none),
               ("adaptive_input", adaptive), ("embedding", embedding)]}

    rows = [{"name": name, "ms": value, "params": params.get(name, float("nan")),
             "vs_adaptive": value / ms["adaptive_input"] if name in train else float("nan"),
             "vs_embedding_eval": value / ms["embedding_eval"] if name in evaluate and "step" not in name
             else float("nan")}
            for name, value in ms.items()]
    print(f"WikiText-2 batches of {args.blocks}x{args.block_size} tokens, V={vocab}, "
          f"{unique_per_batch:.0f} unique ids per batch; cache table {define_eval.cache_nbytes / 2**20:.1f} MiB")
    print_table(rows, [("name", "candidate", "{}"), ("ms", "ms", "{:.2f}"), ("params", "params", "{}"),
                       ("vs_adaptive", "/ adaptive", "{:.2f}"), ("vs_embedding_eval", "/ embedding eval", "{:.2f}")])
    print(f"define / reference_define = {ms['define'] / ms['reference_define']:.2f}")
    print(f"decoding step, table with the staleness check / bare table = "
          f"{ms['define_cached_step'] / ms['bare_table_step']:.2f} "
          f"({1000 * (ms['define_cached_step'] - ms['bare_table_step']):.1f} us per lookup)")
    return {
        "meta": dict(meta(device, dtype, args.rounds), vocab=vocab, tokens_per_batch=args.blocks * args.block_size,
                     define=define_args, cache_nbytes=define_eval.cache_nbytes),
        "ms": ms,
        "params": params,
        "unique_per_batch": unique_per_batch,
        "ratios": {
            "define_vs_adaptive_input": ms["define"] / ms["adaptive_input"],
            "define_vs_map_only": ms["define"] / ms["map_only"],
            "define_vs_reference_define": ms["define"] / ms["reference_define"],
            "define_cached_eval_vs_embedding_eval": ms["define_cached_eval"] / ms["embedding_eval"],
            "define_cached_step_vs_bare_table_step": ms["define_cached_step"] / ms["bare_table_step"],
        },
    }
