"""The README's main job. Until the closed-loop simulation lands it runs the cells demo."""
from __future__ import annotations


def add_arguments(parser):
    from liquid_control.cells import demo

    demo.add_arguments(parser)


def run(args) -> int:
    from liquid_control.cells import demo

    return demo.run(args)
