"""nowcast: NiNo parameter nowcasting (model, baselines, optimizer wrapper) — being built.

See DESIGN.md section 4. The package is importable so that the distribution's layout is stable.
"""

__all__: list[str] = []
