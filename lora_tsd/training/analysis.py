"""What a cell records for the analysis figures, per adapted matrix: singular values, change
rates at the end (and at the switch / init where the method has them), selected indices."""
from __future__ import annotations

import torch

from ..methods import export, tsd
from ..methods.export import lora_layers
from ..methods.hooks import Context


def analysis_arrays(model, ctx: Context) -> dict:
    """Per adapted matrix: singular values, change rates at the end (and at the switch / init
    where the method has them), selected indices. Keys are '<module>|<field>'."""
    out = {}
    for name, layer in lora_layers(model):
        dec = ctx.svd_of(name, layer)
        with torch.no_grad():
            B, A = export.effective_factors(layer)
        key = name.removeprefix("base_model.model.")
        out[f"{key}|singular_values"] = dec.S.float().cpu().numpy()
        out[f"{key}|rates_end"] = tsd.change_rates(dec, B, A).float().cpu().numpy()
        for phase in ("switch", "init"):
            if name in ctx.analysis.get(phase, {}):
                out[f"{key}|rates_{phase}"] = ctx.analysis[phase][name]["rates"].numpy()
                out[f"{key}|indices_{phase}"] = ctx.analysis[phase][name]["indices"].numpy()
        del dec  # one layer's SVD at a time
    return out
