"""The decoder widths a DeFINE model fixes (Transformer LM and translation alike), with one-line errors naming the
flag: the decoder's input is the embedding's output, m = --decoder-embed-dim wide, and an output tied to the Map
scores d-dim states (d = --define-input-dim, else --define-map-dim)."""

from fairseq.utils import safe_getattr

from fairseq_define.models.define_options import unit_input_dim


def check_decoder_dims(args, tied: bool) -> None:
    """Raise ValueError if --decoder-input-dim differs from --decoder-embed-dim, or (tied output) if
    --decoder-output-dim differs from d."""
    input_dim = safe_getattr(args, "decoder_input_dim", args.decoder_embed_dim)
    if input_dim != args.decoder_embed_dim:
        raise ValueError(
            f"--decoder-input-dim={input_dim} has no place in a DeFINE model: its input is "
            f"--decoder-embed-dim={args.decoder_embed_dim} wide; set the Map with --define-map-dim and the "
            f"unit's input with --define-input-dim"
        )
    d = unit_input_dim(args)
    if tied and args.decoder_output_dim != d:
        raise ValueError(
            f"--decoder-output-dim={args.decoder_output_dim} contradicts the output tied to the Map, which "
            f"scores d={d}-dim states (--define-input-dim / --define-map-dim); drop --decoder-output-dim"
        )
