"""After training: reading a user's inputs and reporting predictions of a trained run."""
