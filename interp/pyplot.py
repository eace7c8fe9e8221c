"""matplotlib for drawing into files: the headless Agg backend, imported only when a plot is drawn."""


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, so plots draw on servers and in Spaces with no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
