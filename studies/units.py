"""The DeFINE units the studies compare, each spelled once, as fairseq-train flags.

New rows name a preset (`--define-preset`, fairseq_define.modules.define_config.preset_options); the rows that ran
before presets existed keep the flags they ran with, spelled here, so that their committed results stay what their
flags say.
"""

NO_UNIT = ["--define-transform", "none"]  # the control: the Map alone (projected to the model width)
RECOMMENDED = ["--define-preset", "recommended"]
PAPER = ["--define-preset", "paper"]


def paper_unit(k: int = 1024, depth: int = 3, max_groups: int = 32) -> list:
    """The paper's unit with explicit sizes (default: the light Table-1a unit, k = 1024, N = 3, g_max = 32)."""
    return ["--define-transform", "define", "--define-expand-dim", str(k), "--define-depth", str(depth),
            "--define-max-groups", str(max_groups)]


def authors_unit(m: int, max_groups: int = 32) -> list:
    """The authors' unit, k = 4m, N = 3, g_max = `max_groups`, LayerNorm + swish, plain steps."""
    return ["--define-transform", "authors", "--define-expand-dim", str(4 * m), "--define-depth", "3",
            "--define-max-groups", str(max_groups), "--define-norm", "ln", "--define-activation", "swish"]


def authors_fan_in(m: int, max_groups: int = 32) -> list:
    """The unit the rows named authors-*-fan-in ran: the authors' unit with each weight matrix's Adam step by fan-in
    (the recommended preset before it calibrated its output to the host's scale)."""
    return [*authors_unit(m, max_groups), "--define-unit-lr-scale", "fan-in"]
