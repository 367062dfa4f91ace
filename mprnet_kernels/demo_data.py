"""Placeholder: being written."""


def add_arguments(parser):
    pass


def main(args) -> int:
    raise SystemExit("not written yet")
