"""Distillation: teach a small task model (a "student") one LLM stage from a teacher's outputs.

The paper does not prompt a big model at pre-training scale: it distils a 70B teacher into a 1B templatizer and a
3B instantiator and runs those over billions of documents. Here: `examples.py` turns teacher data (a gold file or
a stage's output folder) into (prompt, target) pairs in the student's compact contract, `train.py` fine-tunes any
Hugging Face causal LM on them (LoRA or full, loss on the target tokens only) and keeps the epoch that scores best
on the gold dev split with `goldeval`, `augment.py` adds rejection-sampled teacher data, `card.py` writes the
model card.
"""
