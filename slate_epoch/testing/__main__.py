"""``python -m slate_epoch.testing replay|run|soak``: the simulation's command line."""

from slate_epoch.testing._simulation import main

if __name__ == "__main__":
    raise SystemExit(main())
