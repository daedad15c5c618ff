"""`python -m synthcl` (and so `accelerate launch -m synthcl ...`)."""

from synthcl.cli import main

if __name__ == "__main__":
    main()
