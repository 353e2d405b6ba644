"""`uv run python -m bench [--quick] [--only ...] [--profile]`."""

from bench.runner import main

if __name__ == "__main__":
    main()
