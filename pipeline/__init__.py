"""Luigi pipeline: data -> training -> evaluation -> NumPy export -> reference check -> ablation -> report."""
