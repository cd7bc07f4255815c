"""Number options that refuse what no command can use: NaN anywhere, infinities where a size is meant, and a
range whose ends are out of order. Click turns the refusal into a usage error (exit 2, one line)."""
from __future__ import annotations

import math

import click


class _Number(click.ParamType):
    name = "number"

    def __init__(self, infinite: bool) -> None:
        self.infinite = infinite  # inf allowed (a timeout without a limit), NaN never

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if math.isnan(number) or (math.isinf(number) and not self.infinite):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE = _Number(infinite=False)  # radii, ranges, weights, shares
SECONDS = _Number(infinite=True)  # timeouts: inf means none


def ordered_range(ctx, param, value):
    """A --range LO HI callback: LO < HI."""
    if value is not None and len(value) == 2 and not value[0] < value[1]:
        raise click.BadParameter(f"LO must be below HI, got {value[0]:g} {value[1]:g}", ctx=ctx, param=param)
    return value
