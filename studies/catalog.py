"""Every study by name: `study(name, tiny=False, **options)` builds its `Study`."""

import importlib
from typing import Dict

from studies.runner import Study

# name -> the module of studies/ and the function that builds it
STUDIES: Dict[str, str] = {
    "lm_wikitext2": "language_models.lm_wikitext2",
    "lm_wikitext2_diagnosis": "language_models.lm_wikitext2_diagnosis",
    "txl_wikitext2": "language_models.txl_wikitext2",
    "lstm_wikitext2": "language_models.lstm_wikitext2",
    "mt_multi30k": "translation.mt_multi30k",
}
# the studies that have a tiny variant (the same rows on tiny models) and those that take extra test sets
TINY = ("txl_wikitext2", "lstm_wikitext2", "mt_multi30k")
WITH_TESTS = ("mt_multi30k",)


def study(name: str, tiny: bool = False, tests=()) -> Study:
    """Study `name`; `tiny`: its rows on tiny models; `tests`: extra test-set prefixes (translation)."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name}; studies: {', '.join(STUDIES)}")
    if tiny and name not in TINY:
        raise ValueError(f"--tiny: study {name} has no tiny variant ({', '.join(TINY)} have)")
    if tests and name not in WITH_TESTS:
        raise ValueError(f"--test: study {name} takes no extra test sets")
    options = {"tiny": tiny} if name in TINY else {}
    if name in WITH_TESTS:
        options["tests"] = tuple(tests)
    module, function = STUDIES[name].rsplit(".", 1)
    return getattr(importlib.import_module(f"studies.{module}"), function)(**options)
