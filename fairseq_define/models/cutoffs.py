"""The one parser of adaptive band cutoffs, whichever flag carries them: `--adaptive-input-cutoff` (the Transformer
LM's adaptive Map, fairseq's own flag), `--adaptive-softmax-cutoff` (the LSTM's Map and softmax, and fairseq's),
`--adaptive-cutoff` (Transformer-XL's softmax bands). Errors name the flag the model was given."""

from typing import List, Optional


def parse_cutoffs(value, flag: str, vocab_size: Optional[int] = None) -> List[int]:
    """"20000,40000", "[20000, 40000]", a sequence of ints, or None / "" (no bands) -> strictly increasing
    positive ids; with `vocab_size`, each must be <= it. A bad value raises a one-line ValueError naming `flag`."""
    if value is None or (isinstance(value, str) and not value.strip("[]() ")):
        return []
    parts = value.strip("[]() ").split(",") if isinstance(value, str) else list(value)
    try:
        cutoffs = [int(str(c).strip()) for c in parts]
    except ValueError:
        raise ValueError(f"{flag}={value} must be comma-separated integers") from None
    if cutoffs[0] < 1 or any(b <= a for a, b in zip(cutoffs, cutoffs[1:])):
        raise ValueError(f"{flag}={value} must be strictly increasing positive ids")
    if vocab_size is not None and cutoffs[-1] > vocab_size:
        raise ValueError(f"{flag}={value} must be strictly increasing positive ids, each <= the vocabulary size "
                         f"{vocab_size}")
    return cutoffs
