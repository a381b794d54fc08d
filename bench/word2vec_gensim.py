"""The reference for graft's word2vec: gensim's skip-gram with negative sampling on the same corpus, with the same
settings and the same tokens, scored on the same benchmarks; prints one JSON object.

Usage (after `bash scripts/fetch-data.sh sotu word2vec-eval`, in a Python environment with `pip install gensim==4.4.0`):
    python bench/word2vec_gensim.py data/sotu data/word2vec-eval/questions-words.txt \
        data/word2vec-eval/wordsim353.tsv [--epochs 5] [--threads 2] [--seed 42]
and for graft: `graft train examples/sotu-word2vec.toml --out runs/sotu-word2vec` (its metrics.json and timing.json).

Tokens: lowercased maximal runs of letters, digits and apostrophes, graft's word tokenizer; each line of each .txt
file (sorted by path) is a sentence. gensim ignores tokens past the 10,000th of a sentence, so longer lines are cut
into pieces of 10,000 (the State of the Union addresses are one line each); graft keeps them whole, which differs
only in the few windows that would cross a cut.
"""

import argparse
import json
import pathlib
import re
import time

from gensim.models import Word2Vec

WORD = re.compile(r"(?:[^\W_]|')+")
MAX_SENTENCE = 10_000


def sentences(folder):
    out = []
    for path in sorted(pathlib.Path(folder).rglob("*.txt")):
        if any(part.startswith(".") for part in path.parts):
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            tokens = WORD.findall(line.lower())
            out += [tokens[i : i + MAX_SENTENCE] for i in range(0, len(tokens), MAX_SENTENCE)]
    return [s for s in out if s]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("corpus")
    p.add_argument("questions")
    p.add_argument("wordsim")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dim", type=int, default=100)
    a = p.parse_args()
    corpus = sentences(a.corpus)
    start = time.perf_counter()
    model = Word2Vec(
        corpus,
        sg=1,
        hs=0,
        negative=5,
        window=5,
        min_count=5,
        sample=1e-3,
        vector_size=a.dim,
        epochs=a.epochs,
        workers=a.threads,
        seed=a.seed,
    )
    seconds = time.perf_counter() - start
    kv = model.wv
    analogy, sections = kv.evaluate_word_analogies(a.questions)
    evaluated = sum(len(s["correct"]) + len(s["incorrect"]) for s in sections if s["section"] != "Total accuracy")
    pearson, spearman, oov = kv.evaluate_word_pairs(a.wordsim)
    print(
        json.dumps(
            {
                "engine": "gensim",
                "tokens": sum(len(s) for s in corpus),
                "vocabulary": len(kv),
                "train_seconds": seconds,
                "epochs": a.epochs,
                "threads": a.threads,
                "analogy_accuracy": analogy,
                "analogy_evaluated": evaluated,
                "similarity_spearman": spearman.statistic,
                "similarity_pearson": pearson.statistic,
                "similarity_oov_percent": oov,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
