"""The evaluation harness: federations from real corpora, every configuration side by side.

``fedrag eval run`` (:mod:`eval.cli`) draws the questions of a suite (:mod:`eval.suites`,
loaders in :mod:`eval.datasets`), builds the central index and the partitioned federations
(:mod:`eval.partition`, :mod:`eval.builder`), asks every configuration (:mod:`eval.configs`)
through the gateway's pipeline (:mod:`eval.runner`; answer formats and generation settings in
:mod:`eval.answering`, multiple choice and code posed and graded in :mod:`eval.grading`), logs
one row per question (:mod:`eval.records`) and writes the report (:mod:`eval.report`,
:mod:`eval.plots`) with the metrics of :mod:`eval.metrics`, :mod:`eval.answer_quality` (free-form
answers) and :mod:`eval.abstention` (abstaining on unanswerable questions, the calibrated
threshold); generated code runs only in :mod:`eval.sandbox`.
"""

from eval.configs import EvalConfig, select_configs, standard_configs
from eval.evaluation import run_evaluation
from eval.runner import Progress, RunOptions

__all__ = ["EvalConfig", "Progress", "RunOptions", "run_evaluation", "select_configs", "standard_configs"]
