"""Luigi pipeline: data -> training -> evaluation -> NumPy export -> reference check -> ablation -> report.

Run it with ``luigi --module pipeline FullReport --local-scheduler`` (``make report``).
"""

from pipeline.tasks import (Ablation, Evaluation, FullReport, NumpyWeights, PreparedDataset,  # noqa: F401
                            ReferenceCheck, TrainedModel)
