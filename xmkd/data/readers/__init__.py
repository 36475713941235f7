"""Dataset readers: each turns one dataset's on-disk format into `Frame`s."""
