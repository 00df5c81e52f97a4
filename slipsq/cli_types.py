"""Click parameter types shared by the command modules."""

from __future__ import annotations

from typing import Any

import click


class GivenPath(click.Path):
    """click.Path that refuses an empty value. `-o "$OUT"` with OUT unset passes "", which every
    command read as "not given": replay wrote no results and exited 0, `--config ""` ran on the
    defaults, `explain --from ""` answered from the block store. A usage error says so instead."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "" or value == b"":
            self.fail("is empty (an unset shell variable?): give a path, or leave the option out", param, ctx)
        return super().convert(value, param, ctx)
