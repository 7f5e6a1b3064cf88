"""Stage 3, judging a model: running it over images (``infer``), the confidences CSVs
(``confidences``), SmartCam's contract check (``contract``), metrics (``metrics``), the reports
(``report``, ``report_page``, ``report_plots``, ``html_report``; the flight rehearsal's section
``rehearsal_report``) and label review (``review``).

May import: ``opssat.core``, ``opssat.onboard``, ``opssat.data``.
"""
