"""fairseq_define: DeFINE embeddings (Mehta et al., ICLR 2020) as a fairseq plugin.

torch and fairseq are deliberately *not* install requirements: installing this plugin must never rebuild or
replace a fairseq or torch the user already has (upstream fairseq 0.12 on Python <= 3.10, or fairseq-fixed on
3.11). `make install` sets up a complete environment.
"""
import re

from setuptools import find_packages, setup

with open("fairseq_define/__init__.py") as f:  # the one version string
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

setup(
    name="fairseq_define",
    version=VERSION,
    description="DeFINE: Deep Factorized Input Token Embeddings for fairseq",
    packages=find_packages(include=["fairseq_define", "fairseq_define.*"]),
    python_requires=">=3.11",  # what CI tests (fairseq-fixed 0.12.3.1, torch 2.13)
    install_requires=[],
    extras_require={"examples": ["sacrebleu", "sentencepiece", "matplotlib"]},
    entry_points={"console_scripts": ["fairseq-define-params = fairseq_define.params:main",
                                    "fairseq-define-export = fairseq_define.export:main"]},
)
