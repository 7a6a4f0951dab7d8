import importlib.util
import os

from tests.conftest import REPO_ROOT


def load(relative):
    spec = importlib.util.spec_from_file_location(relative.replace("/", "_"), os.path.join(REPO_ROOT, relative))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wmt14_training_data_is_concatenated_and_filtered(tmp_path):
    wmt = load("examples/translation/wmt14_en_de.py")
    orig = tmp_path / "orig"
    pairs = {
        "training/europarl-v7.de-en": [("a b c", "x y z"), ("", "leer")],
        "commoncrawl.de-en": [("one", " ".join(["w"] * 30)), ("ok then", "gut dann")],
        "training/news-commentary-v12.de-en": [(" ".join(["v"] * 300), " ".join(["v"] * 300))],
    }
    for corpus, lines in pairs.items():
        (orig / corpus).parent.mkdir(parents=True, exist_ok=True)
        for index, lang in enumerate(("en", "de")):
            (orig / f"{corpus}.{lang}").write_text("".join(pair[index] + "\n" for pair in lines), encoding="utf-8")
    wmt.concatenate_training_data(str(orig), str(tmp_path / "raw"))
    assert (tmp_path / "raw" / "train.en").read_text().splitlines() == ["a b c", "ok then"]
    assert (tmp_path / "raw" / "train.de").read_text().splitlines() == ["x y z", "gut dann"]

