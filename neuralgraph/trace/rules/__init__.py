"""The op rules of the traced converter: what each aten op says about neurons.

One table, :data:`RULES`, maps an op name (``aten.addmm``) to its rule ``rule(flow, op)``; the
decorator :func:`rule` adds to it (``docs/converters.md``, "Adding a rule"). The kinds of op:

* **movers** (views, transposes, ``cat``, ``split``, ``select``, ``expand``, ...) only move
  elements: the rule runs the same op on the neuron ids, so every layout change is exact;
* **elementwise** ops keep each element's neuron; combining two different neurons (a residual
  sum, a gate) makes a new neuron tied to both, unless one of them was just created by a
  parameterized op and is read nowhere else, which then *is* the sum (as hand-written graphs
  draw it: a projection lands on the stream it is added to);
* **parameterized** ops (``mm``/``addmm``/``bmm`` with a weight, ``convolution``, ``embedding``,
  norms, biases) create neurons and the parameter edges into them;
* **contractions** of two activations: ``q @ k^T`` over a neuron axis makes one head node per
  distinct query row and makes the contracted query and key neurons one neuron (or, when key
  neurons serve several heads, ties them with head edges); ``probs @ v`` over a data axis makes
  the value neurons members of the head;
* **reductions** and softmaxes over neurons record the sets they reduce (permutations must stay
  inside each set); over data axes they keep the neurons;
* any other op is **opaque**: the neurons it reads are fixed — never a false symmetry.


Rules live by kind in :mod:`.layout`, :mod:`.elementwise`, :mod:`.layers`, :mod:`.attention` and
:mod:`.reductions`; importing this package registers them all.
"""

from . import attention, elementwise, layers, layout, reductions  # noqa: F401  (registers the rules)
from .registry import RULES, apply, rule

__all__ = ["RULES", "rule", "apply"]
