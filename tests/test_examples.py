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



def test_plot_reads_valid_curves_from_fairseq_logs(tmp_path):
    plot = load("examples/plot_results.py")
    log = tmp_path / "train.log"
    log.write_text(
        "2026-11-24 05:00:00 | INFO | fairseq_cli.train | Start iterating over samples\n"
        "2026-11-24 05:00:30 | INFO | train_inner | epoch 001:     25 / 1020 loss=13.3, ppl=10170.2\n"
        "2026-11-24 05:01:00 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 9.518 | ppl 733.09 | "
        "wps 4158.1 | wpb 2047.2 | bsz 16 | num_updates 100\n"
        "2026-11-24 05:02:30 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 9.1 | ppl 548.75 | "
        "wps 4158.1 | wpb 2047.2 | bsz 16 | num_updates 200 | best_loss 9.1\n"
    )
    assert plot.valid_curve(str(log)) == [(100, 60.0, 733.09), (200, 150.0, 548.75)]
