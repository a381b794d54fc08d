"""A tiny random BERT as a Hugging Face / sentence-transformers directory, and its reference outputs, for graft's
BERT encoder tests (which CI runs without the 90 MB MiniLM).

Run from the repository root, in a virtual environment with the pinned versions:

    python -m venv .venv && .venv/bin/pip install -r tools/reference/requirements.txt
    .venv/bin/python tools/reference/tiny_bert.py

It rewrites

* `crates/graft/tests/fixtures/tiny-bert/`: `config.json` and `model.safetensors` (a `transformers.BertModel`:
  2 layers, hidden 32, 4 heads, intermediate 64, vocabulary 100, GELU (erf), LayerNorm eps 1e-12; random weights,
  the LayerNorm scales and shifts randomized too; the unused `pooler.*` and the int64 `embeddings.position_ids`
  are kept, as many checkpoints have them), a WordPiece `tokenizer.json` + `vocab.txt` over 100 tokens (lower-cased;
  like MiniLM's, it pads and truncates every input to a fixed 16 tokens, which graft must switch off), and the
  sentence-transformers files `modules.json` (Transformer, Pooling, Normalize), `sentence_bert_config.json`
  (max_seq_length 24) and `1_Pooling/config.json` (mean pooling);
* `crates/graft/tests/fixtures/tiny_bert_reference.json`: for three inputs (two single texts and one pair),
  the token ids, token type ids and attention masks, padded to the longest, the `last_hidden_state` of `BertModel`,
  the pooled outputs (mean, cls, max; masked as sentence-transformers does) of the single texts, and their
  sentence embeddings (mean pooling, then L2 normalization).

The reference runs in float64 on weights that are exactly representable in float32, so the error the Rust test
measures is graft's own float32 error. CI never runs this script; it only reads the committed fixtures.
"""

import json
import os

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel

OUT = "crates/graft/tests/fixtures/tiny-bert"
REFERENCE = "crates/graft/tests/fixtures/tiny_bert_reference.json"
MAX_SEQ_LENGTH = 24

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an is are was this that it of to and in on for with as at by from cat dog man woman sits plays "
    "playing guitar outside inside example sentence each converted small big red blue tree house car road "
    "runs run walk walks eat eats food good bad day night sun moon water fire"
).split()
PIECES = "##s ##ing ##ed ##er ##ly ##y ##es ##a ##e ##i ##o ##t ##n ##r . , ! ? ' -".split()
VOCAB = SPECIAL + WORDS + PIECES
# Letters make every lower-case word tokenizable (as pieces) instead of [UNK]; fill up to 100 tokens.
for c in "bcdefghijklmnopqrstuvwxyz":
    if len(VOCAB) == 100:
        break
    if c not in VOCAB:
        VOCAB.append(c)
assert len(VOCAB) == 100 and len(set(VOCAB)) == 100, len(VOCAB)

TEXTS = ["The cat sits outside", "A Man is PLAYING guitar, walking the dogs quickly!"]
PAIR = ("Each sentence is converted", "the red car runs on the road")


def tokenizer():
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tok.decoder = decoders.WordPiece()
    return tok


def main():
    os.makedirs(os.path.join(OUT, "1_Pooling"), exist_ok=True)
    torch.manual_seed(0)

    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        initializer_range=0.2,
        pad_token_id=0,
    )
    config._attn_implementation = "eager"
    model = BertModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if v.is_floating_point()}
    state["embeddings.position_ids"] = torch.arange(config.max_position_embeddings, dtype=torch.int64)[None]
    save_file(state, os.path.join(OUT, "model.safetensors"), metadata={"format": "pt"})
    config_json = config.to_dict()
    config_json.pop("_attn_implementation_autoset", None)
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config_json, f, indent=2, sort_keys=True)

    tok = tokenizer()
    with open(os.path.join(OUT, "vocab.txt"), "w") as f:
        f.write("".join(t + "\n" for t in VOCAB))
    shipped = tokenizer()
    shipped.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    shipped.enable_truncation(max_length=16)
    shipped.save(os.path.join(OUT, "tokenizer.json"))
    with open(os.path.join(OUT, "modules.json"), "w") as f:
        json.dump(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ],
            f,
            indent=2,
        )
    with open(os.path.join(OUT, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False}, f, indent=2)
    with open(os.path.join(OUT, "1_Pooling", "config.json"), "w") as f:
        json.dump(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
            f,
            indent=2,
        )

    encodings = [tok.encode(t) for t in TEXTS] + [tok.encode(*PAIR)]
    # "quickly" has no pieces in the vocabulary: the second text holds one [UNK] on purpose.
    assert [e.tokens.count("[UNK]") for e in encodings] == [0, 1, 0], [e.tokens for e in encodings]
    longest = max(len(e.ids) for e in encodings)
    ids = torch.zeros(len(encodings), longest, dtype=torch.int64)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(encodings):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        types[i, :n] = torch.tensor(e.type_ids)
        mask[i, :n] = 1

    reference = model.double()
    with torch.no_grad():
        hidden = reference(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
    single = hidden[: len(TEXTS)]
    m = mask[: len(TEXTS)].unsqueeze(-1).double()
    mean = (single * m).sum(1) / m.sum(1).clamp(min=1e-9)
    cls = single[:, 0]
    mx = single.masked_fill(m == 0, -1e9).max(1).values
    embedding = torch.nn.functional.normalize(mean, p=2, dim=1)

    def plain(t):
        return np.asarray(t.tolist()).tolist()

    with open(REFERENCE, "w") as f:
        json.dump(
            {
                "texts": TEXTS,
                "pair": list(PAIR),
                "tokens": [e.tokens for e in encodings],
                "input_ids": plain(ids),
                "token_type_ids": plain(types),
                "attention_mask": plain(mask),
                "last_hidden_state": plain(hidden),
                "pooled": {"mean": plain(mean), "cls": plain(cls), "max": plain(mx)},
                "sentence_embedding": plain(embedding),
                "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
            },
            f,
        )
    print(f"wrote {OUT}/ and {REFERENCE}; tokens: {[e.tokens for e in encodings]}")


if __name__ == "__main__":
    main()
