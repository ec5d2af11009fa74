"""LAD: post-training of reasoning LLMs with Learning Advantage Distributions (arXiv 2602.20132)."""

__version__ = "0.1.0"
