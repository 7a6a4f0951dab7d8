"""fairseq_define: DeFINE embeddings (Mehta et al., ICLR 2020) as a fairseq plugin.

torch and fairseq are deliberately *not* install requirements: installing this plugin must never rebuild or
replace a fairseq or torch the user already has. `make install` sets up a complete environment (fairseq-fixed
0.12.3.1, upstream fairseq 0.12 with Python 3.11 fixes). MIT licence (LICENSE), as fairseq.
"""
import re

from setuptools import find_packages, setup

with open("fairseq_define/__init__.py") as f:  # the one version string
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)
with open("README.md", encoding="utf-8") as f:
    README = f.read()

setup(
    name="fairseq_define",
    version=VERSION,
    description="DeFINE: Deep Factorized Input Token Embeddings for fairseq",
    long_description=README,
    long_description_content_type="text/markdown",
    author="fairseq_define contributors",
    license="MIT",
    license_files=["LICENSE"],
    project_urls={
        "Paper": "https://arxiv.org/abs/1911.12385",
        "fairseq": "https://github.com/facebookresearch/fairseq",
    },
    keywords=["fairseq", "embeddings", "language modeling", "machine translation", "DeFINE"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    packages=find_packages(include=["fairseq_define", "fairseq_define.*"]),
    python_requires=">=3.11",  # what CI tests (fairseq-fixed 0.12.3.1, torch 2.13); README.md says the same
    install_requires=[],
    extras_require={"examples": ["sacrebleu", "sentencepiece", "matplotlib"]},
    entry_points={"console_scripts": ["fairseq-define-params = fairseq_define.params:main",
                                    "fairseq-define-export = fairseq_define.export:main"]},
)
