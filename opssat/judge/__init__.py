"""Stage 3, judging a model: running it over images (``infer``; ``infer.judge_variants`` is
the one engine that judges a model's variants for the trainer, cross-validation and the
benches), the confidences CSVs (``confidences``), SmartCam's contract check (``contract``),
metrics with calibration and temperature scaling (``metrics``), the reports
(``report``, ``report_page``, ``report_plots``, ``html_report``) and label review (``review``).

May import: ``opssat.core``, ``opssat.onboard``, ``opssat.data``.
"""
