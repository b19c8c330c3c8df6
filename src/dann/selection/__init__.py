"""Choosing without target labels: the validators that pick a checkpoint (``validators``) and the search over
methods and their weight (``tune``)."""
