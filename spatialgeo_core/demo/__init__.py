"""The demo model trained from scratch on the synthetic world (no downloads, CPU, minutes).

- data.py: the world's training, caption and held-out bench files, and the tokenizer corpus.
- tokenizer.py: a LLaMA-layout SentencePiece model trained on that corpus.
- towers.py: the tiny semantic (CLIP) and geometry (DINOv2) towers and their pretraining.
- reproduce.py: the whole recipe, one command: data, tokenizer, towers, stage 1, stage 2, eval.
- cli.py: `spatialgeo demo-train`.
"""
