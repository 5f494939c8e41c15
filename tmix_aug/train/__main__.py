"""``python -m tmix_aug.train`` (also under torchrun): the tmix-train command line."""

from .runner import main

if __name__ == "__main__":
    main()
