"""`zoo inspect`: placeholder until the format reader lands."""


def register(app) -> None:
    pass
