"""graft from Python.

    import graft
    model = graft.load("runs/digits-mlp")        # a run directory written by `graft train`
    model.predict([[[0.0] * 8] * 8])             # -> [{"class": "0", "class_index": 0, "probabilities": {...}}]
    graft.train("examples/digits-mlp.toml", "runs/x")   # -> {"history": [...], "test": {...}}
    graft.embed("runs/digits-mlp", inputs, layer="hidden")   # -> list of vectors (numpy array if numpy is there)

Inputs are what the model's data were: a dict of column -> value per row for a CSV model, a string per text for a
text model, a (nested) list or numpy array of numbers per sample for an array or image model. The stored
preprocessing is applied as `graft predict` applies it; each answer is the row `graft predict` writes to .jsonl.
Errors raise graft.GraftError (a ValueError) with the one-line message the command line gives.
"""
import json as _json

from . import _graft
from ._graft import GraftError

__all__ = ["GraftError", "Model", "embed", "load", "train"]


def _plain(value):
    # numpy arrays and scalars, and anything else that knows how to become a list.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot send a {type(value).__name__} to graft")


def _inputs(inputs):
    if hasattr(inputs, "tolist"):
        inputs = inputs.tolist()
    if isinstance(inputs, (str, dict)):
        raise GraftError("inputs: give a list with one input per item (a single input goes in a list of one)")
    return _json.dumps(list(inputs), default=_plain)


class Model:
    """A trained model with its stored preprocessing. Create it with graft.load(path)."""

    def __init__(self, native):
        self._native = native

    def predict(self, inputs, mc_dropout=None, seed=42):
        """One prediction per input, as `graft predict` writes them: class, class_index and probabilities by class
        name (classification), values (regression), one dict per task (multi-task); with mc_dropout=N passes, the
        mean with std, entropy and mutual_information (seeded by seed)."""
        return _json.loads(self._native.predict_json(_inputs(inputs), mc_dropout, seed))

    @property
    def info(self):
        """The input's name, shape and JSON form, the objective, the output (task, loss, classes), whether unknown
        inputs are marked."""
        return _json.loads(self._native.info_json())

    def __repr__(self):
        return repr(self._native)


def load(path):
    """Loads a run directory written by `graft train --out`."""
    return Model(_graft.load(str(path)))


def train(experiment, out, seed=42, overwrite=False, quiet=True, resume=False):
    """Trains an experiment file into the run directory `out`, as `graft train` does; returns the history and the
    test metrics."""
    return _json.loads(_graft.train_json(str(experiment), str(out), seed, overwrite, quiet, resume))


def embed(model, inputs, layer=None, batch_size=32):
    """Embeddings of `inputs`: a graft run directory run up to `layer`, or a Hugging Face sentence encoder
    directory (texts, no layer). A numpy array when numpy is installed, else a list of rows."""
    result = _json.loads(_graft.embed_json(str(model), _inputs(inputs), layer, batch_size))
    shape, data = result["shape"], result["data"]
    try:
        import numpy

        return numpy.asarray(data, dtype=numpy.float32).reshape(shape)
    except ImportError:
        width = 1
        for d in shape[1:]:
            width *= d
        return [data[i * width:(i + 1) * width] for i in range(shape[0])]
