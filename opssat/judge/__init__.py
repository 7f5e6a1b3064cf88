"""Stage 3, judging a model: running it over images (``infer``; ``infer.judge_variants`` is
the one engine that judges a model's variants for the trainer, cross-validation and the
benches), the confidences CSVs (``confidences``), SmartCam's contract check (``contract``),
the one judge of a runtime's answers and of two runtimes' agreement (``agreement``), metrics
with calibration and temperature scaling (``metrics``), the reports (``report``,
``report_page``, ``report_plots``, ``html_report``; the flight rehearsal's section
``rehearsal_report``), label review (``review``), the decisions a page takes and downloads for
relabel.py (``decisions``), the queue of unlabelled thumbnails, least sure first (``queue``),
and the option groups the scripts share (``shared_options``).

May import: ``opssat.core``, ``opssat.onboard``, ``opssat.data``.
"""
