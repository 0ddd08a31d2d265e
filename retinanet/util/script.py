"""How a command-line script ends on an error: one line on stderr that names the problem, and
exit status 2, the status argparse gives a bad flag.

The library raises exceptions, and the scripts' ``main`` functions turn the expected ones into
``SystemExit("error: ...")``; Python would print that and exit with status 1. ``run_script``
gives every such stop status 2, and turns a file that could not be written (``WriteError``: a
full disk, a read-only folder) into the same one line instead of a traceback. Stops that carry a
number (a signal's 130 or 143, a check's 1) keep it.
"""
import sys

from retinanet.util.io import WriteError

ERROR_STATUS = 2


def run_script(main):
    """Call ``main()`` as a script's entry point and exit with the status it returns (0 for None);
    see the module's docstring."""
    try:
        status = main()
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
            raise SystemExit(ERROR_STATUS) from None
        raise
    except WriteError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(ERROR_STATUS) from None
    if status:
        raise SystemExit(status)
