"""``python -m slate_epoch``: the ``slate-epoch`` command line."""

from slate_epoch.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
