"""Models: the Classifier contract, the zoo, training, checkpoints and loading users' own models."""
