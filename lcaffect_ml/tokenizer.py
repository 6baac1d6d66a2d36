"""Comment tokenizers: a hub tokenizer for real comment encoders, or a character-level one built
offline from the training comments for the tiny configuration.

Live comments are short and mostly Chinese, where a character is the natural unit (Chinese
RoBERTa's vocabulary is character-level too), so the offline tokenizer is a ``tokenizers``
WordLevel model over single characters, with BERT-style ``[CLS] … [SEP]`` framing, wrapped as a
``transformers.PreTrainedTokenizerFast`` and saved with the checkpoint.
"""

from __future__ import annotations

import os
from typing import Iterable

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_char_tokenizer(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 1,
                         model_max_length: int = 64):
    """Train a character-level tokenizer on ``texts`` (deterministic for the same texts)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    # NFKC folds full-width forms; lower-casing keeps the Latin part of the vocabulary small.
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex("."), behavior="isolated"),
    ])
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=model_max_length)


def load_tokenizer(name_or_path: str | os.PathLike):
    """A saved (or hub) tokenizer; offline a local folder with ``tokenizer.json`` is enough."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name_or_path))


def tokenize_comments(tokenizer, comments: list[list[str]], max_comments: int, max_length: int):
    """Tokenise up to ``max_comments`` comments per segment into padded (B, K, L) tensors
    (L = the longest comment in the batch, at most ``max_length`` tokens).

    Returns ``input_ids``, ``attention_mask`` (B, K, L) and ``comment_mask`` (B, K): True where a
    real comment sits. Segments with fewer comments are padded with empty rows, which the model
    skips (they never reach the text encoder).
    """
    import torch

    batch = len(comments)
    flat, where = [], []
    for b, seg in enumerate(comments):
        for k, text in enumerate(seg[:max_comments]):
            flat.append(text)
            where.append(b * max_comments + k)
    width = 2
    enc = None
    if flat:
        # pad to the longest comment in the batch, not to max_length: live comments are short
        enc = tokenizer(flat, padding="longest", truncation=True, max_length=max_length,
                        return_tensors="pt", return_token_type_ids=False)
        width = enc["input_ids"].shape[1]
    input_ids = torch.full((batch * max_comments, width), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros((batch * max_comments, width), dtype=torch.long)
    comment_mask = torch.zeros(batch * max_comments, dtype=torch.bool)
    if enc is not None:
        idx = torch.tensor(where, dtype=torch.long)
        input_ids[idx] = enc["input_ids"]
        attention[idx] = enc["attention_mask"]
        comment_mask[idx] = True
    return (input_ids.view(batch, max_comments, width),
            attention.view(batch, max_comments, width),
            comment_mask.view(batch, max_comments))
