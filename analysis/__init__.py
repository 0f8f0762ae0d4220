"""analysis: permutation-symmetry experiments, trajectory PCA and graph drawings — being built.

See DESIGN.md section 1.
"""

__all__: list[str] = []
