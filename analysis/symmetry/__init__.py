"""The neuron-permutation-symmetry experiment (NiNo paper, appendix A.6), for every attention converter.

Question: does a neural graph tell a permutation of a transformer's neurons that keeps the
network's function ("good") from one that does not ("bad")? :func:`symmetry_experiment`

1. builds one (or ``layers``) transformer layer of the architecture from a config (no downloads),
   in float64, with parameters re-drawn at random (seeded);
2. draws ``n`` permutations of its units: about half from the symmetries the converter declares
   on the correct graph (random non-empty combinations of them), half of several "bad" kinds
   (:data:`BAD_KINDS`): units moved across heads consistently for Q, K and V (one swap, or a
   shuffle that ignores the heads), a declared symmetry applied everywhere except one parameter
   block (e.g. queries permuted but not keys), one unit moved into another head in one group
   only;
3. **labels every sample by running the model**: the permuted parameters are loaded into the
   model and its outputs on fixed random inputs are compared with the original outputs; the
   sample is function-preserving (label 1) when the largest change, relative to the largest
   output, is at most ``tolerance``;
4. builds the graph of every permuted parameter vector with the correct construction and with the
   naive one (Kofinas et al. 2024: W_q, W_k, W_v stacked into one 3-slot edge, no head nodes) and
   embeds it with one randomly initialised GNN (NiNo's message passing, 3 layers, 32 hidden units,
   mean aggregation, edge features and edge types); the graph embedding is the mean over edges of
   the final edge states concatenated with the mean over nodes of the final node states;
5. fits a logistic regression (standardized features, seeded) good vs bad on all samples (the
   paper's accuracy) and, beyond the paper, on a stratified train split scored on the held-out rest;
6. draws a PCA scatter of the classifier's inputs coloured by label, one panel per construction.

Graphs of permuted parameters: a permutation moves parameter values between edges of one fixed
structure (the value on edge ``(s, d)`` moves to ``(pi(s), pi(d))``), so the graph of the
permuted model is the original structure carrying the permuted edge features. The structure is
therefore built once per construction and only the edge features change per sample.

Three choices make the random GNN a faithful isomorphism probe (``docs/analysis_symmetry.md``
has the measurements behind them):

* **Messages flow both ways** (``bidirectional=True``). NiNo passes messages along edge direction
  only, and head-membership edges point from the head node to its units: a head node never hears
  from its units, so with automorphism-invariant node features no directed GNN can tell which
  units share a head. Every edge but the self-loops is therefore also passed reversed, with its
  own edge type (``type + 15``).
* **Automorphism-invariant node features** (``node_features="invariant"``). The converters'
  Laplacian positional encodings are not invariant under the graph's own automorphisms where an
  eigenvalue is degenerate (the basis inside the eigenspace follows node order): permuting whole
  heads moves parameters but not the encodings, so function-preserving head permutations would
  look different to any GNN. The default replaces them by a basis-independent version of the same
  spectral information (per node, the diagonal of the projector onto each of the first ``lpe``
  eigenvalue clusters of the same normalized Laplacian), plus the token-id feature ``pos_w``.
  ``"lpe"`` uses the converters' ``pos`` unchanged, ``"none"`` only ``pos_w``.
* **The classifier compares with the unpermuted graph** (``features="difference"``). Every good
  permutation yields a graph isomorphic to the original, hence exactly the original embedding (to
  round-off); bad ones scatter *around* it in every direction, so a linear classifier on the raw
  embeddings cannot cut that one point out of the cloud however well the graph separates them
  (:attr:`SymmetryResult.embedding_accuracy` reports that protocol too). The classifier therefore
  sees ``log10(|z - z_ref| / rms(z_ref) + 1e-12)`` per embedding component, ``z_ref`` being the
  embedding of the unpermuted graph; ``features="embedding"`` uses ``z`` itself.

Grouped-query attention: the converters build no naive graph for it. The naive graph of a GQA
layer here is the naive graph of the equivalent multi-head layer (each key/value head repeated for
the query heads it serves), carrying the GQA parameters at the repeated places.

The package, one concept per module:

- :mod:`~analysis.symmetry.models`: the tiny random float64 models (configuration checks, builders);
- :mod:`~analysis.symmetry.permutations`: drawing good and bad permutations;
- :mod:`~analysis.symmetry.embedding`: the correct and naive graphs and their random-GNN embeddings;
- :mod:`~analysis.symmetry.classifier`: the logistic-regression separability test;
- :mod:`~analysis.symmetry.result`: :class:`SymmetryResult` and its table;
- :mod:`~analysis.symmetry.figure`: the PCA scatter;
- :mod:`~analysis.symmetry.experiment`: :func:`symmetry_experiment`, which runs the stages in order.
"""

from __future__ import annotations

from .classifier import ROUNDOFF_FLOOR
from .embedding import CONSTRUCTIONS
from .experiment import symmetry_experiment
from .models import SYMMETRY_ARCHS, supported_archs
from .permutations import BAD_KINDS, DEFAULT_BAD_KINDS, GOOD_KIND
from .result import LABEL_COLORS, SymmetryResult

__all__ = [
    "BAD_KINDS",
    "CONSTRUCTIONS",
    "DEFAULT_BAD_KINDS",
    "GOOD_KIND",
    "LABEL_COLORS",
    "ROUNDOFF_FLOOR",
    "SYMMETRY_ARCHS",
    "SymmetryResult",
    "supported_archs",
    "symmetry_experiment",
]
